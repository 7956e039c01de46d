package index

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

var t0 = time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)

func newKey(t testing.TB, env string) string {
	t.Helper()
	k, err := apikey.Generate(env)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mtime(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

// newRecord builds a record for owner team-a/name with one version per key.
func newRecord(name string, pol record.Policy, keys ...string) *record.Record {
	r := &record.Record{
		FormatVersion: record.FormatVersion,
		Owner:         record.Owner{Namespace: "team-a", Name: name, UID: types.UID("uid-" + name)},
		Policy:        pol,
	}
	for _, k := range keys {
		r.Keys = append(r.Keys, record.NewVersion(k, t0.Add(-time.Hour)))
	}
	return r
}

func standard() record.Policy {
	return record.Policy{Permissions: []string{"read", "write"}, Environment: "production", RequestsPerHour: 1000}
}
