// Package recordtest builds keys and key records for tests of the packages
// that read records (the auth server's index and front-ends), so each does
// not carry its own copy.
package recordtest

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// Key generates a key of environment env.
func Key(t testing.TB, env string) string {
	t.Helper()
	k, err := apikey.Generate(env)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// New builds a record for owner team-a/name (UID "uid-"+name) with one
// version per key, each issued at issuedAt.
func New(name string, pol record.Policy, issuedAt time.Time, keys ...string) *record.Record {
	r := &record.Record{
		FormatVersion: record.FormatVersion,
		Owner:         record.Owner{Namespace: "team-a", Name: name, UID: types.UID("uid-" + name)},
		Policy:        pol,
	}
	for _, k := range keys {
		r.Keys = append(r.Keys, record.NewVersion(k, issuedAt))
	}
	return r
}

// Standard is a read-write production policy of 1,000 requests an hour.
func Standard() record.Policy {
	return record.Policy{Permissions: []string{"read", "write"}, Environment: "production", RequestsPerHour: 1000}
}
