package webhookserver

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/internal/record"
)

// What the index holds is what the server answers: records loaded, rotated,
// disabled and deleted (Upsert, Delete), and records with unusable parts
// failing closed. The index's own rules are tested in package index.

func TestIndexUpsertDelete(t *testing.T) {
	f := newFixture(t, nil)
	a, b := newKey(t, "production"), newKey(t, "production")
	r := newRecord("web", standard(), a)
	if err := f.idx.Upsert("rec", r, t0); err != nil {
		t.Fatal(err)
	}
	status := func(k string) int { return f.do(req{key: k}).Code }
	if status(a) != 200 || status(b) != 401 {
		t.Fatal("after the first upsert")
	}
	// Rotation: b added, a kept for its overlap.
	r.Keys[0].ExpiresAt = mtime(t0.Add(time.Hour))
	r.Keys = append(r.Keys, record.NewVersion(b, t0))
	if err := f.idx.Upsert("rec", r, t0); err != nil {
		t.Fatal(err)
	}
	if status(a) != 200 || status(b) != 200 {
		t.Fatal("both versions must work during the overlap")
	}
	if recs, keys := f.idx.Len(); recs != 1 || keys != 2 {
		t.Fatalf("Len = %d, %d", recs, keys)
	}
	// A version dropped from the record is unknown at once.
	r.Keys = r.Keys[1:]
	if err := f.idx.Upsert("rec", r, t0); err != nil {
		t.Fatal(err)
	}
	if status(a) != 401 || status(b) != 200 {
		t.Fatal("dropped version still accepted")
	}
	// A policy change applies to every version.
	r.Policy.Disabled = true
	_ = f.idx.Upsert("rec", r, t0)
	if status(b) != 401 {
		t.Fatal("disabled key accepted")
	}
	r.Policy.Disabled = false
	_ = f.idx.Upsert("rec", r, t0)
	if status(b) != 200 {
		t.Fatal("re-enabled key refused")
	}
	id, ok := f.idx.Delete("rec")
	if !ok || id != "uid-web" {
		t.Fatalf("Delete = %q, %v", id, ok)
	}
	if status(b) != 401 {
		t.Fatal("deleted record still accepted")
	}
	if _, ok := f.idx.Delete("rec"); ok {
		t.Fatal("second Delete found the record")
	}
	if recs, keys := f.idx.Len(); recs != 0 || keys != 0 {
		t.Fatalf("Len after delete = %d, %d", recs, keys)
	}
}

// The decision counts by the quota key authz computed when the record was
// compiled; the record loader forgets by the identity the index returns, and
// the limiter computes the key again. The two must meet: the count a decision
// took is the one Peek reads and Forget drops.
func TestForgetDropsTheDecisionsCount(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.RequestsPerHour = 2
	key := f.add("web", pol)
	ctx := context.Background()
	if w := f.do(req{key: key}); w.Code != http.StatusOK {
		t.Fatalf("first request: %d", w.Code)
	}
	if rem, _ := f.lim.Peek(ctx, quota.Named("uid-web"), quota.PerHour(2), t0); rem != 1 {
		t.Fatalf("the identity's count shows %d remaining, want 1", rem)
	}
	if w := f.do(req{key: key}); w.Code != http.StatusOK {
		t.Fatalf("second request: %d", w.Code)
	}
	if w := f.do(req{key: key}); w.Code != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d", w.Code)
	}
	id, ok := f.idx.Delete("rec-web")
	if !ok {
		t.Fatal("Delete found no record")
	}
	f.lim.Forget(id)
	f.add("web", pol, key)
	if w := f.do(req{key: key}); w.Code != http.StatusOK || w.Header().Get("X-Ratelimit-Remaining") != "1" {
		t.Fatalf("after Forget: %d, remaining %q", w.Code, w.Header().Get("X-Ratelimit-Remaining"))
	}
}

func TestCompileFailsClosed(t *testing.T) {
	f := newFixture(t, nil)
	k, k2 := newKey(t, "production"), newKey(t, "production")

	// Every allowlist entry invalid: the key works from nowhere.
	pol := standard()
	pol.IPAllowlist = []string{"not-an-ip", "10.0.0.1/99"}
	r := newRecord("ip", pol, k)
	if err := f.idx.Upsert("rec-ip", r, t0); err == nil {
		t.Fatal("bad allowlist entries not reported")
	}
	if w := f.do(req{key: k, remote: "10.0.0.1:1"}); w.Code != http.StatusForbidden {
		t.Fatalf("bad allowlist: %d", w.Code)
	}

	// Every domain invalid: likewise.
	pol = standard()
	pol.Domains = []string{"https://example.com"}
	if err := f.idx.Upsert("rec-dom", newRecord("dom", pol, k2), t0); err == nil {
		t.Fatal("bad domain not reported")
	}
	if w := f.do(req{key: k2, header: http.Header{"Origin": {"https://example.com"}}}); w.Code != http.StatusForbidden {
		t.Fatalf("bad domain: %d", w.Code)
	}

	// A bad hash leaves out that version only.
	k3, k4 := newKey(t, "production"), newKey(t, "production")
	r = newRecord("hash", standard(), k3, k4)
	r.Keys[0].Hash = "zz"
	err := f.idx.Upsert("rec-hash", r, t0)
	if err == nil {
		t.Fatal("bad hash not reported")
	}
	if f.do(req{key: k3}).Code != 401 || f.do(req{key: k4}).Code != 200 {
		t.Fatal("bad hash handling")
	}

	// A negative limit refuses the key.
	k5 := newKey(t, "production")
	pol = standard()
	pol.RequestsPerHour = -1
	if err := f.idx.Upsert("rec-neg", newRecord("neg", pol, k5), t0); err == nil {
		t.Fatal("negative limit not reported")
	}
	if f.do(req{key: k5}).Code != 401 {
		t.Fatal("negative limit accepted")
	}
}

// counterValue returns the value of the counter or gauge named name in reg.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
