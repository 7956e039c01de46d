// Package record is the contract between the controller and the auth server:
// one Secret per MeterrAPIKey in the records namespace, holding the key's
// policy and the SHA-256 hash of every key version, never a plaintext key.
//
// The encoding is versioned (the FormatVersion field and the format label), so
// a newer auth server can read an older controller's records and the reverse:
// readers ignore fields they do not know and refuse only a newer major format.
package record

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
)

const (
	// FormatVersion is the record format this build writes.
	FormatVersion = 1

	// DataKey is the Secret data key holding the encoded record.
	DataKey = "record.json"
)

// The labels of a key record: api/v1alpha1's LabelRecord, LabelFormat,
// LabelManagedBy and ManagedByValue, spelled again here (contract_test.go
// holds them equal). Importing api/v1alpha1 builds its Scheme, of every
// built-in API group, at start-up, and the auth server, which links this
// package, must not pay for that (docs/architecture.md, "Memory of the auth
// server").
const (
	labelRecord    = "auth.meterr.ai/key-record"
	labelFormat    = "auth.meterr.ai/record-format"
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedByValue = "meterr-operator"
)

// Selector is the label selector that matches every key record.
const Selector = labelRecord + "=true"

// Record is the decoded content of a key record.
type Record struct {
	FormatVersion int       `json:"formatVersion"`
	Owner         Owner     `json:"owner"`
	Policy        Policy    `json:"policy"`
	Keys          []Version `json:"keys"`
}

// Owner identifies the MeterrAPIKey a record belongs to.
type Owner struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
}

// String returns "namespace/name".
func (o Owner) String() string { return o.Namespace + "/" + o.Name }

// Policy is what the auth server enforces for every version of a key.
type Policy struct {
	Permissions []string `json:"permissions"`
	Environment string   `json:"environment"`
	// RequestsPerHour is the hourly limit; 0 means unlimited.
	RequestsPerHour int64        `json:"requestsPerHour"`
	IPAllowlist     []string     `json:"ipAllowlist,omitempty"`
	Domains         []string     `json:"domains,omitempty"`
	Disabled        bool         `json:"disabled,omitempty"`
	ExpiresAt       *metav1.Time `json:"expiresAt,omitempty"`
}

// Version is one key version: its hash and validity. A version whose
// ExpiresAt has passed is a tombstone: its callers get expired_api_key.
type Version struct {
	ID        string      `json:"id"`
	Hash      string      `json:"hash"`
	Hint      string      `json:"hint"`
	NotBefore metav1.Time `json:"notBefore"`
	// ExpiresAt is nil for the current key (and for a key written to the
	// record but not yet delivered); set when a newer key replaces it.
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// Revoked is set when the version was reported compromised (revoked by
	// the key itself): the auth server refuses it as an unknown key
	// (invalid_api_key), and ExpiresAt is set to the same moment, so an
	// auth server that predates this field refuses it too (expired_api_key).
	// Only the controller writes records, and it never clears this field.
	Revoked *Revocation `json:"revoked,omitempty"`
}

// Revocation records that a key version was reported compromised.
type Revocation struct {
	// At is when the report was acted on.
	At metav1.Time `json:"at"`
	// Source names who reported it (e.g. "cli", "gitlab", "github").
	Source string `json:"source"`
}

// Expired reports whether the version is a tombstone at now.
func (v Version) Expired(now time.Time) bool {
	return v.ExpiresAt != nil && !now.Before(v.ExpiresAt.Time)
}

// NewVersion describes a freshly generated key.
func NewVersion(key string, issuedAt time.Time) Version {
	return NewVersionOf(key, apikey.HashOf(key), issuedAt)
}

// NewVersionOf is NewVersion for a key whose hash h (apikey.HashOf(key)) the
// caller has already computed.
func NewVersionOf(key string, h apikey.Hash, issuedAt time.Time) Version {
	return Version{ID: h.ID(), Hash: h.String(), Hint: apikey.Hint(key), NotBefore: metav1.NewTime(issuedAt)}
}

// Name returns the record Secret's name for a MeterrAPIKey. It is a hash of
// namespace, name and uid because their concatenation can exceed a name's 253
// characters, and a re-created key of the same name must get a new record.
func Name(namespace, name string, uid types.UID) string {
	sum := sha256.Sum256([]byte(namespace + "\x00" + name + "\x00" + string(uid)))
	return "mak-" + hex.EncodeToString(sum[:16])
}

// Encode returns the Secret data for a record.
func Encode(r *Record) ([]byte, error) {
	r.FormatVersion = FormatVersion
	return json.Marshal(r)
}

// Decode reads a record from a Secret. It refuses Secrets that are not
// records and formats newer than it understands.
func Decode(s *corev1.Secret) (*Record, error) {
	if s.Labels[labelRecord] != "true" {
		return nil, fmt.Errorf("secret %s/%s is not a key record", s.Namespace, s.Name)
	}
	raw, ok := s.Data[DataKey]
	if !ok {
		return nil, fmt.Errorf("key record %s/%s has no %s", s.Namespace, s.Name, DataKey)
	}
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoding key record %s/%s: %w", s.Namespace, s.Name, err)
	}
	if r.FormatVersion < 1 || r.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("key record %s/%s has format %d; this build reads 1 to %d",
			s.Namespace, s.Name, r.FormatVersion, FormatVersion)
	}
	return &r, nil
}

// Labels returns the labels every record carries.
func Labels() map[string]string {
	return map[string]string{
		labelRecord:    "true",
		labelFormat:    fmt.Sprintf("v%d", FormatVersion),
		labelManagedBy: managedByValue,
	}
}
