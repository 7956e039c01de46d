// Package webhooksig signs and verifies meterr webhook payloads.
//
// Two forms travel in the X-Meterr-Signature header:
//
//   - The legacy form of the product documentation: the hex HMAC-SHA256 of
//     the raw body with the shared secret. It has no timestamp, so a captured
//     request can be replayed; accept it only while senders migrate
//     (Verifier.AllowLegacy).
//   - The versioned form "t=<unix seconds>,v1=<hex>": the HMAC-SHA256 of
//     "<unix seconds>.<raw body>". The timestamp must be within
//     Verifier.Tolerance of the verifier's clock, which bounds replays. A
//     sender rotating its secret may send several v1 values, one per secret;
//     unknown fields (a future v2) are ignored.
//
// Both are computed over the raw body bytes exactly as received, never over a
// re-serialised JSON document (the documentation's JSON.stringify(req.body)
// breaks on key order and whitespace). Signatures are compared in constant
// time. A verifier takes several secrets, so a secret can be rotated with an
// overlap: the new one is added to the verifiers, then the senders switch,
// then the old one is removed.
package webhooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Header is the HTTP header that carries a signature.
const Header = "X-Meterr-Signature"

// DefaultTolerance is how far a versioned signature's timestamp may be from
// the verifier's clock, either way.
const DefaultTolerance = 5 * time.Minute

// maxFields bounds the work a header can ask for (each v1 value is checked
// against every secret).
const maxFields = 16

// The reasons Verify refuses a request. Errors from Verify wrap one of them;
// none of them contains a secret or a signature.
var (
	ErrNoSignature = errors.New("no signature")
	ErrMalformed   = errors.New("malformed signature header")
	ErrTimestamp   = errors.New("signature timestamp outside the tolerance")
	ErrLegacy      = errors.New("legacy signature (no timestamp) not accepted")
	ErrMismatch    = errors.New("signature does not match")
	ErrNoSecret    = errors.New("no signing secret")
)

// Sign returns the legacy signature of body: hex(HMAC-SHA256(secret, body)).
// It is what the product documentation's example computes (over the raw body).
func Sign(secret, body []byte) string {
	return hex.EncodeToString(mac(secret, "", body))
}

// SignAt returns the versioned signature of body at time t, with one v1
// value per secret (several while a secret is being rotated).
func SignAt(body []byte, t time.Time, secrets ...[]byte) (string, error) {
	if len(secrets) == 0 {
		return "", ErrNoSecret
	}
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=")
	b.WriteString(ts)
	for _, s := range secrets {
		if len(s) == 0 {
			return "", ErrNoSecret
		}
		b.WriteString(",v1=")
		b.WriteString(hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String(), nil
}

// mac is HMAC-SHA256(secret, body) for the legacy form (ts == ""), or
// HMAC-SHA256(secret, ts + "." + body).
func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	if ts != "" {
		m.Write([]byte(ts))
		m.Write([]byte{'.'})
	}
	m.Write(body)
	return m.Sum(nil)
}

// Signature is a parsed X-Meterr-Signature value.
type Signature struct {
	// Legacy is set for the bare hex form; then V1 holds its one MAC.
	Legacy bool
	// Timestamp is the versioned form's t, in Unix seconds.
	Timestamp int64
	// V1 are the MACs, decoded.
	V1 [][]byte
}

// Parse reads a header value in either form. It never returns a secret or a
// MAC in its error.
func Parse(header string) (Signature, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return Signature{}, ErrNoSignature
	}
	if !strings.Contains(header, "=") {
		mac, ok := decodeMAC(header)
		if !ok {
			return Signature{}, ErrMalformed
		}
		return Signature{Legacy: true, V1: [][]byte{mac}}, nil
	}
	var sig Signature
	seenT := false
	fields := strings.Split(header, ",")
	if len(fields) > maxFields {
		return Signature{}, ErrMalformed
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || k == "" {
			return Signature{}, ErrMalformed
		}
		switch k {
		case "t":
			if seenT || v == "" || len(v) > 19 {
				return Signature{}, ErrMalformed
			}
			t, err := strconv.ParseInt(v, 10, 64)
			if err != nil || t < 0 || strconv.FormatInt(t, 10) != v {
				return Signature{}, ErrMalformed
			}
			sig.Timestamp, seenT = t, true
		case "v1":
			mac, ok := decodeMAC(v)
			if !ok {
				return Signature{}, ErrMalformed
			}
			sig.V1 = append(sig.V1, mac)
		default:
			// A scheme this build does not know (v2, ...): ignored, so
			// senders can add it before verifiers understand it.
		}
	}
	if !seenT || len(sig.V1) == 0 {
		return Signature{}, ErrMalformed
	}
	return sig, nil
}

// decodeMAC decodes a 64-character hex HMAC-SHA256, either case.
func decodeMAC(s string) ([]byte, bool) {
	if len(s) != hex.EncodedLen(sha256.Size) {
		return nil, false
	}
	mac, err := hex.DecodeString(s)
	return mac, err == nil
}

// Verifier checks signatures against one or more secrets.
type Verifier struct {
	// Secrets are the accepted signing secrets; a signature made with any
	// of them is accepted.
	Secrets [][]byte
	// Tolerance bounds the versioned form's clock difference; zero means
	// DefaultTolerance.
	Tolerance time.Duration
	// AllowLegacy accepts the bare hex form, which cannot expire. Mind that
	// a v1 MAC of body B at time t is also the legacy MAC of the body
	// "t.B": with AllowLegacy, a captured versioned signature can be
	// replayed as a legacy one for that (usually not JSON) body. Turn it on
	// only while senders migrate.
	AllowLegacy bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks header against the raw body. It returns nil or an error
// wrapping one of the Err values.
func (v *Verifier) Verify(body []byte, header string) error {
	if len(v.Secrets) == 0 {
		return ErrNoSecret
	}
	for _, s := range v.Secrets {
		if len(s) == 0 {
			// Anyone can compute a MAC with an empty key.
			return ErrNoSecret
		}
	}
	sig, err := Parse(header)
	if err != nil {
		return err
	}
	ts := ""
	if sig.Legacy {
		if !v.AllowLegacy {
			return ErrLegacy
		}
	} else {
		now := time.Now
		if v.Now != nil {
			now = v.Now
		}
		tol := v.Tolerance
		if tol <= 0 {
			tol = DefaultTolerance
		}
		if d := now().Unix() - sig.Timestamp; d > int64(tol/time.Second) || -d > int64(tol/time.Second) {
			return ErrTimestamp
		}
		ts = strconv.FormatInt(sig.Timestamp, 10)
	}
	for _, s := range v.Secrets {
		want := mac(s, ts, body)
		for _, got := range sig.V1 {
			if hmac.Equal(want, got) {
				return nil
			}
		}
	}
	return ErrMismatch
}
