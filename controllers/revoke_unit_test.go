package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// A revocation can only end validity: it never clears a revocation, never
// moves an expiry later, and a request naming no version changes nothing.
func TestApplyRevocationsOnlyEnds(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	keys := make([]string, 4)
	for i := range keys {
		keys[i], _ = apikey.Generate("production")
	}
	past, future := metav1.NewTime(now.Add(-time.Hour)), metav1.NewTime(now.Add(time.Hour))
	earlier := metav1.NewTime(now.Add(-2 * time.Hour))
	rec := &record.Record{Keys: []record.Version{
		record.NewVersion(keys[0], now.Add(-3*time.Hour)), // tombstone
		record.NewVersion(keys[1], now.Add(-2*time.Hour)), // previous, in overlap
		record.NewVersion(keys[2], now.Add(-time.Hour)),   // current
	}}
	rec.Keys[0].ExpiresAt = &past
	rec.Keys[1].ExpiresAt = &future
	req := func(key string) revocation {
		return revocation{annotation: authv1alpha1.AnnotationRevokePrefix + apikey.HashOf(key).ID(),
			req: authv1alpha1.RevocationRequest{Hash: apikey.HashOf(key).String(), Source: "github"}}
	}

	done := applyRevocations(rec, []revocation{req(keys[3]), req(keys[0]), req(keys[1]), req(keys[2]),
		{req: authv1alpha1.RevocationRequest{Hash: "zz"}}}, now)
	if done[0].index != -1 || done[4].index != -1 {
		t.Fatal("a request naming no version matched one")
	}
	if !rec.Keys[0].ExpiresAt.Equal(&past) {
		t.Fatal("revoking a tombstone moved its expiry")
	}
	for i, v := range rec.Keys {
		if v.Revoked == nil || v.Revoked.Source != "github" || !v.Revoked.At.Equal(&metav1.Time{Time: now}) {
			t.Fatalf("version %d not revoked at now by github: %+v", i, v.Revoked)
		}
		if v.ExpiresAt == nil || v.ExpiresAt.After(now) {
			t.Fatalf("version %d still valid after now", i)
		}
	}
	if !done[3].fresh || !done[3].wasCurrent || done[2].wasCurrent {
		t.Fatal("which version was current is misreported")
	}

	// Again, later, from another source: nothing changes.
	rec.Keys[2].Revoked.At = earlier
	again := applyRevocations(rec, []revocation{req(keys[2])}, now.Add(time.Hour))
	if again[0].fresh || !rec.Keys[2].Revoked.At.Equal(&earlier) || rec.Keys[2].Revoked.Source != "github" {
		t.Fatal("a repeated revocation rewrote the first")
	}

	// The status list keeps what it listed and adds the record's.
	st := compromisedStatus([]authv1alpha1.CompromisedKeyStatus{{ID: "gone", Source: "cli"}}, rec)
	if len(st) != 4 || st[0].ID != "gone" {
		t.Fatalf("status list: %+v", st)
	}
	if sourceLabel("<script>") != "other" {
		t.Fatal("an arbitrary source reached the metric's label")
	}
}
