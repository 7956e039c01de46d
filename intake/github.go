package intake

// GitHub's secret scanning partner format: GitHub POSTs [{token, type, url,
// source}], signs the raw body with ECDSA P-256 over SHA-256 (the ASN.1 DER
// signature, base64, in Github-Public-Key-Signature) with the key named in
// Github-Public-Key-Identifier, and reads back a feedback array
// [{token_hash, token_type, label}] with label true_positive or
// false_positive. The public keys are GitHub's {"public_keys": [...]} JSON,
// from a file (a mounted ConfigMap) the operator's administrator keeps.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
)

const sourceGitHub = "github"

// Headers GitHub signs its requests with.
const (
	HeaderGitHubKeyID     = "Github-Public-Key-Identifier"
	HeaderGitHubSignature = "Github-Public-Key-Signature"
)

// PublicKey is one of GitHub's verification keys.
type PublicKey struct {
	Key *ecdsa.PublicKey
	// Current: GitHub's is_current; every listed key verifies (GitHub
	// keeps signing with an older one for a while after a rotation).
	Current bool
}

// githubKeysDoc is GitHub's public_keys document.
type githubKeysDoc struct {
	PublicKeys []struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	} `json:"public_keys"`
}

// ParseGitHubKeys reads GitHub's {"public_keys": [{key_identifier, key (PEM),
// is_current}]} document. Every key must be an ECDSA P-256 public key.
func ParseGitHubKeys(doc []byte) (map[string]PublicKey, error) {
	var d githubKeysDoc
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("reading GitHub's public keys: %w", err)
	}
	if len(d.PublicKeys) == 0 {
		return nil, errors.New("reading GitHub's public keys: public_keys is empty")
	}
	out := make(map[string]PublicKey, len(d.PublicKeys))
	for i, k := range d.PublicKeys {
		if k.KeyIdentifier == "" {
			return nil, fmt.Errorf("GitHub public key #%d has no key_identifier", i)
		}
		block, _ := pem.Decode([]byte(k.Key))
		if block == nil {
			return nil, fmt.Errorf("GitHub public key %s: key is not PEM", k.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("GitHub public key %s: %w", k.KeyIdentifier, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("GitHub public key %s is not an ECDSA P-256 key", k.KeyIdentifier)
		}
		out[k.KeyIdentifier] = PublicKey{Key: ec, Current: k.IsCurrent}
	}
	return out, nil
}

// GitHubKeysFile returns a key source that reads path on each call (a
// mounted ConfigMap is updated in place).
func GitHubKeysFile(path string) func() (map[string]PublicKey, error) {
	return func() (map[string]PublicKey, error) {
		doc, err := os.ReadFile(path) //nolint:gosec // the administrator names the file
		if err != nil {
			return nil, err
		}
		return ParseGitHubKeys(doc)
	}
}

// VerifyGitHub checks the signature of a raw body: ECDSA P-256 over its
// SHA-256, ASN.1 DER, base64, by the key named keyID.
func VerifyGitHub(keys map[string]PublicKey, keyID, signature string, body []byte) bool {
	k, ok := keys[keyID]
	if !ok || keyID == "" || signature == "" {
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return false
	}
	sum := sha256.Sum256(body)
	return ecdsa.VerifyASN1(k.Key, sum[:], sig)
}

type githubToken struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// Feedback is one entry of the answer GitHub reads back.
type Feedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// ParseGitHub reads a signed body: a JSON array of {token, type, url, source}.
func ParseGitHub(body []byte, maxTokens int) ([]githubToken, error) {
	var in []githubToken
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&in); err != nil {
		return nil, errInvalid("the body is not a JSON array of {token, type, url, source}")
	}
	if dec.More() {
		return nil, errInvalid("the body holds more than one JSON value")
	}
	if len(in) > maxTokens {
		return nil, errInvalid("more tokens than one request may carry")
	}
	return in, nil
}

func (s *Server) github(w http.ResponseWriter, r *http.Request) {
	if !s.allow(w, sourceGitHub) {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, sourceGitHub, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	keyID, sig := r.Header.Get(HeaderGitHubKeyID), r.Header.Get(HeaderGitHubSignature)
	if keyID == "" || sig == "" {
		s.fail(w, sourceGitHub, http.StatusUnauthorized, "unsigned", "the request is not signed ("+HeaderGitHubKeyID+", "+HeaderGitHubSignature+")")
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.bodyError(w, sourceGitHub, err)
		return
	}
	keys, err := s.o.GitHubKeys()
	if err != nil {
		s.o.Log.Error(err, "reading GitHub's public keys; refusing every request")
		s.fail(w, sourceGitHub, http.StatusUnauthorized, "bad_signature", "the signature cannot be verified")
		return
	}
	if !VerifyGitHub(keys, keyID, sig, body) {
		s.fail(w, sourceGitHub, http.StatusUnauthorized, "bad_signature", "the signature does not verify with a known GitHub public key")
		return
	}
	in, err := ParseGitHub(body, s.o.MaxTokens)
	if err != nil {
		s.fail(w, sourceGitHub, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	reports := make([]Report, len(in))
	for i, t := range in {
		reports[i] = Report{Token: t.Token, Location: t.URL}
	}
	out, err := s.revoke(r, sourceGitHub, reports)
	if err != nil {
		s.o.Log.Error(err, "GitHub intake: filing revocations")
		s.fail(w, sourceGitHub, http.StatusInternalServerError, "internal_error", "the revocations could not be filed; retry")
		return
	}
	feedback := make([]Feedback, len(in))
	for i, t := range in {
		sum := sha256.Sum256([]byte(t.Token))
		label := "false_positive"
		if out[i] != NotOurs {
			label = "true_positive"
		}
		feedback[i] = Feedback{TokenHash: hex.EncodeToString(sum[:]), TokenType: t.Type, Label: label}
	}
	revoked, already, notOurs := s.count(sourceGitHub, out)
	s.o.Log.Info("GitHub intake", "tokens", len(in), "revoked", revoked, "alreadyRevoked", already, "notOurs", notOurs)
	s.writeJSON(w, sourceGitHub, http.StatusOK, feedback)
}
