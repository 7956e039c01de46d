package index

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/internal/record/recordtest"
)

var t0 = time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)

func newKey(t testing.TB, env string) string { return recordtest.Key(t, env) }

func mtime(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

// newRecord builds a record for owner team-a/name with one version per key,
// issued an hour before t0.
func newRecord(name string, pol record.Policy, keys ...string) *record.Record {
	return recordtest.New(name, pol, t0.Add(-time.Hour), keys...)
}

func standard() record.Policy { return recordtest.Standard() }
