package controllers

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mt(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

func testKey(t *testing.T) string {
	t.Helper()
	k, err := apikey.Generate(apikey.EnvProduction)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDecideIssue(t *testing.T) {
	key := testKey(t)
	cur := record.NewVersion(key, t0)
	rec := &record.Record{Keys: []record.Version{cur}}
	old := cur
	old.ExpiresAt = mt(t0.Add(time.Hour))
	recOld := &record.Record{Keys: []record.Version{old}}
	intact := workload{exists: true, owned: true, intact: true, key: key, hash: apikey.HashOf(key)}
	base := func() *authv1alpha1.MeterrAPIKey {
		return &authv1alpha1.MeterrAPIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "k"},
			Status: authv1alpha1.MeterrAPIKeyStatus{SecretName: "k",
				CurrentKey: &authv1alpha1.CurrentKeyStatus{ID: cur.ID}},
		}
	}
	with := func(f func(m *authv1alpha1.MeterrAPIKey)) *authv1alpha1.MeterrAPIKey { m := base(); f(m); return m }

	cases := []struct {
		name   string
		mak    *authv1alpha1.MeterrAPIKey
		rec    *record.Record
		wl     workload
		now    time.Time
		reason string // "" = no new key
	}{
		{"first key", with(func(m *authv1alpha1.MeterrAPIKey) { m.Status = authv1alpha1.MeterrAPIKeyStatus{} }), nil, workload{}, t0, authv1alpha1.ReasonIssued},
		{"steady", base(), rec, intact, t0.Add(time.Hour), ""},
		{"period elapsed", base(), rec, intact, t0.Add(DefaultPeriod), authv1alpha1.ReasonRotationDue},
		{"one second before the period", base(), rec, intact, t0.Add(DefaultPeriod - time.Second), ""},
		{"custom period", with(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour}
		}), rec, intact, t0.Add(time.Hour), authv1alpha1.ReasonRotationDue},
		{"requested in the past, key older", with(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(time.Minute))
		}), rec, intact, t0.Add(2 * time.Minute), authv1alpha1.ReasonRotationRequested},
		{"requested in the same second as the key: already done", with(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(500 * time.Millisecond))
		}), rec, intact, t0.Add(time.Minute), ""},
		{"requested before the key was issued", with(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(-time.Hour))
		}), rec, intact, t0.Add(time.Minute), ""},
		{"requested in the future", with(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(time.Hour))
		}), rec, intact, t0.Add(time.Minute), ""},
		{"disabled pauses rotation", with(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true }),
			rec, intact, t0.Add(DefaultPeriod * 2), ""},
		{"expired keys do not rotate", with(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.ExpiresAt = mt(t0.Add(time.Hour)) }),
			rec, intact, t0.Add(DefaultPeriod), ""},
		{"secret deleted", base(), rec, workload{}, t0, authv1alpha1.ReasonSecretMissing},
		{"secret renamed", with(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.SecretName = "other" }), rec, workload{}, t0, authv1alpha1.ReasonSecretRenamed},
		{"secret edited", base(), rec, workload{exists: true, owned: true}, t0, authv1alpha1.ReasonSecretModified},
		{"secret holds an unknown key", base(), &record.Record{}, intact, t0, authv1alpha1.ReasonSecretModified},
		{"secret holds a superseded key", base(), recOld, intact, t0, authv1alpha1.ReasonSecretModified},
		{"no record, and the Secret's key was not rebuilt into one", base(), nil, intact, t0, authv1alpha1.ReasonSecretModified},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := decideIssue(tc.mak, tc.rec, tc.wl, tc.now)
			if d.reason != tc.reason || d.issue != (tc.reason != "") {
				t.Fatalf("decideIssue = %+v, want reason %q", d, tc.reason)
			}
		})
	}
}

func TestSettleVersions(t *testing.T) {
	v := func(id string, notBefore time.Time, exp *metav1.Time) record.Version {
		return record.Version{ID: id, Hash: id, NotBefore: metav1.NewTime(notBefore), ExpiresAt: exp}
	}
	overlap, retention := time.Hour, 24*time.Hour
	in := []record.Version{
		v("gone", t0.Add(-100*time.Hour), mt(t0.Add(-30*time.Hour))), // tombstone past retention
		v("tomb", t0.Add(-10*time.Hour), mt(t0.Add(-time.Hour))),     // tombstone kept
		v("prev", t0.Add(-5*time.Hour), mt(t0.Add(30*time.Minute))),  // keeps its own expiry
		v("lost", t0.Add(-2*time.Hour), nil),                         // superseded, gets one
		v("cur", t0, nil),                                            // current
		v("undelivered", t0.Add(time.Minute), nil),                   // written after, never delivered
	}
	out := settleVersions(in, 4, overlap, retention, t0.Add(time.Minute))
	var ids []string
	for _, x := range out {
		ids = append(ids, x.ID)
	}
	want := []string{"tomb", "prev", "lost", "cur"}
	if len(ids) != len(want) {
		t.Fatalf("settleVersions kept %v, want %v", ids, want)
	}
	for i := range want {
		if ids[i] != want[i] {
			t.Fatalf("settleVersions kept %v, want %v", ids, want)
		}
	}
	if !out[2].ExpiresAt.Time.Equal(t0.Add(overlap)) {
		t.Fatalf("superseded key expires at %v, want current's issue time + overlap", out[2].ExpiresAt)
	}
	if !out[1].ExpiresAt.Time.Equal(t0.Add(30 * time.Minute)) {
		t.Fatal("an earlier expiry was changed")
	}
	if out[3].ExpiresAt != nil {
		t.Fatal("the current key got an expiry")
	}
	// No delivered key: nothing gets an expiry and nothing is dropped as undelivered.
	if got := settleVersions(in[3:], -1, overlap, retention, t0); len(got) != 3 || got[0].ExpiresAt != nil {
		t.Fatalf("settleVersions without a current key changed %+v", got)
	}
}

func TestNextDeadline(t *testing.T) {
	cur := record.Version{ID: "c", Hash: "c", NotBefore: metav1.NewTime(t0)}
	prev := record.Version{ID: "p", Hash: "p", NotBefore: metav1.NewTime(t0.Add(-time.Hour)), ExpiresAt: mt(t0.Add(2 * time.Hour))}
	tomb := record.Version{ID: "t", Hash: "t", NotBefore: metav1.NewTime(t0.Add(-9 * time.Hour)), ExpiresAt: mt(t0.Add(-time.Hour))}
	retention := 10 * time.Hour
	mk := func(f func(m *authv1alpha1.MeterrAPIKey)) *authv1alpha1.MeterrAPIKey {
		m := &authv1alpha1.MeterrAPIKey{}
		f(m)
		return m
	}
	cases := []struct {
		name string
		mak  *authv1alpha1.MeterrAPIKey
		keys []record.Version
		now  time.Time
		want time.Time
	}{
		{"rotation", mk(func(*authv1alpha1.MeterrAPIKey) {}), []record.Version{cur}, t0, t0.Add(DefaultPeriod)},
		{"end of an overlap", mk(func(*authv1alpha1.MeterrAPIKey) {}), []record.Version{prev, cur}, t0, t0.Add(2 * time.Hour)},
		{"tombstone removal", mk(func(*authv1alpha1.MeterrAPIKey) {}), []record.Version{tomb, cur}, t0, t0.Add(9 * time.Hour)},
		{"requested rotation", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = mt(t0.Add(time.Minute)) }),
			[]record.Version{cur}, t0, t0.Add(time.Minute)},
		{"request already served", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = mt(t0) }),
			[]record.Version{cur}, t0.Add(time.Second), t0.Add(DefaultPeriod)},
		{"expiry", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.ExpiresAt = mt(t0.Add(time.Hour)) }),
			[]record.Version{cur}, t0, t0.Add(time.Hour)},
		{"disabled: no rotation deadline", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true }),
			[]record.Version{cur}, t0, time.Time{}},
		{"never a time in the past", mk(func(*authv1alpha1.MeterrAPIKey) {}), []record.Version{cur}, t0.Add(DefaultPeriod), time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := nextDeadline(tc.mak, &record.Record{Keys: tc.keys}, "c", retention, tc.now)
			if !got.Equal(tc.want) {
				t.Fatalf("nextDeadline = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPolicyFor(t *testing.T) {
	rph := int64(5)
	cases := []struct {
		spec authv1alpha1.MeterrAPIKeySpec
		want int64
	}{
		{authv1alpha1.MeterrAPIKeySpec{}, 1000},
		{authv1alpha1.MeterrAPIKeySpec{RateLimit: authv1alpha1.RateLimit{Tier: authv1alpha1.TierPro}}, 10000},
		{authv1alpha1.MeterrAPIKeySpec{RateLimit: authv1alpha1.RateLimit{Tier: authv1alpha1.TierEnterprise}}, 0},
		{authv1alpha1.MeterrAPIKeySpec{RateLimit: authv1alpha1.RateLimit{Tier: authv1alpha1.TierEnterprise, RequestsPerHour: &rph}}, 5},
	}
	for _, tc := range cases {
		p := policyFor(&authv1alpha1.MeterrAPIKey{Spec: tc.spec})
		if p.RequestsPerHour != tc.want || p.Environment != "production" {
			t.Fatalf("policyFor(%+v) = %+v, want %d per hour", tc.spec, p, tc.want)
		}
	}
}

func TestRebuildable(t *testing.T) {
	key := testKey(t)
	other := testKey(t)
	mak := &authv1alpha1.MeterrAPIKey{Status: authv1alpha1.MeterrAPIKeyStatus{
		CurrentKey: &authv1alpha1.CurrentKeyStatus{ID: apikey.HashOf(key).ID()}}}
	cases := []struct {
		name string
		mak  *authv1alpha1.MeterrAPIKey
		wl   workload
		want bool
	}{
		{"its own key, in its own Secret", mak, workload{exists: true, owned: true, intact: true, key: key, hash: apikey.HashOf(key)}, true},
		{"a key its status does not name", mak, workload{exists: true, owned: true, intact: true, key: other, hash: apikey.HashOf(other)}, false},
		{"a Secret it does not control", mak, workload{exists: true, intact: true, key: key, hash: apikey.HashOf(key)}, false},
		{"no key issued yet", &authv1alpha1.MeterrAPIKey{}, workload{exists: true, owned: true, intact: true, key: key, hash: apikey.HashOf(key)}, false},
		{"a broken Secret", mak, workload{exists: true, owned: true}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := rebuildable(tc.mak, tc.wl); got != tc.want {
				t.Fatalf("rebuildable = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRotationGate(t *testing.T) {
	mak := &authv1alpha1.MeterrAPIKey{Status: authv1alpha1.MeterrAPIKeyStatus{
		CurrentKey: &authv1alpha1.CurrentKeyStatus{IssuedAt: metav1.NewTime(t0)}}}
	live := func(n int) *record.Record {
		rec := &record.Record{}
		for i := range n {
			v := record.Version{ID: fmt.Sprint(i), NotBefore: metav1.NewTime(t0.Add(time.Duration(i-n) * time.Hour))}
			if i < n-1 {
				v.ExpiresAt = mt(t0.Add(time.Duration(i+1) * time.Hour))
			}
			rec.Keys = append(rec.Keys, v)
		}
		return rec
	}
	cases := []struct {
		name   string
		reason string
		rec    *record.Record
		now    time.Time
		until  time.Time
	}{
		{"requested within the interval", authv1alpha1.ReasonRotationRequested, live(1), t0.Add(time.Second), t0.Add(time.Minute)},
		{"requested after the interval", authv1alpha1.ReasonRotationRequested, live(1), t0.Add(time.Minute), time.Time{}},
		{"drift repairs are not held to the interval", authv1alpha1.ReasonSecretMissing, live(1), t0.Add(time.Second), time.Time{}},
		{"scheduled rotation", authv1alpha1.ReasonRotationDue, live(1), t0.Add(time.Second), time.Time{}},
		{"one below the live cap", authv1alpha1.ReasonRotationRequested, live(MaxLiveVersions - 1), t0.Add(time.Minute), time.Time{}},
		{"at the live cap: until the oldest overlap ends", authv1alpha1.ReasonSecretMissing, live(MaxLiveVersions), t0.Add(time.Minute), t0.Add(time.Hour)},
		{"the later of both", authv1alpha1.ReasonRotationRequested, live(MaxLiveVersions), t0.Add(time.Second), t0.Add(time.Hour)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := rotationGate(mak, tc.rec, tc.reason, time.Minute, tc.now)
			if !g.until.Equal(tc.until) || g.delayed() != !tc.until.IsZero() || (g.delayed() && g.why == "") {
				t.Fatalf("rotationGate = %+v, want until %v", g, tc.until)
			}
		})
	}
}

func TestSettleVersionsCap(t *testing.T) {
	var in []record.Version
	for i := range MaxVersions + 5 {
		v := record.Version{ID: fmt.Sprint(i), Hash: fmt.Sprint(i), NotBefore: metav1.NewTime(t0.Add(time.Duration(i) * time.Minute))}
		if i < MaxVersions+4 {
			v.ExpiresAt = mt(v.NotBefore.Add(time.Minute))
		}
		in = append(in, v)
	}
	// The last two previous versions are still in their overlap at now.
	now := in[MaxVersions+3].NotBefore.Time
	out := settleVersions(in, len(in)-1, 0, 720*time.Hour, now)
	if len(out) != MaxVersions {
		t.Fatalf("kept %d versions, want %d", len(out), MaxVersions)
	}
	if out[0].ID != "5" || out[len(out)-1].ID != fmt.Sprint(MaxVersions+4) {
		t.Fatalf("kept %s..%s, want the oldest tombstones dropped first", out[0].ID, out[len(out)-1].ID)
	}
	for _, v := range out[len(out)-2:] {
		if v.Expired(now) {
			t.Fatalf("version %s in its overlap was dropped or expired", v.ID)
		}
	}
}

func TestRotationSchedule(t *testing.T) {
	mk := func(f func(m *authv1alpha1.MeterrAPIKey)) *authv1alpha1.MeterrAPIKey {
		m := &authv1alpha1.MeterrAPIKey{}
		f(m)
		return m
	}
	none := func(*authv1alpha1.MeterrAPIKey) {}
	cases := []struct {
		name     string
		mak      *authv1alpha1.MeterrAPIKey
		issuedAt time.Time
		now      time.Time
		at       time.Time
		reason   string
	}{
		{"the default period", mk(none), t0, t0, t0.Add(DefaultPeriod), authv1alpha1.ReasonRotationDue},
		{"a custom period", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour} }),
			t0, t0, t0.Add(time.Hour), authv1alpha1.ReasonRotationDue},
		{"a request after the key, before the period", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = mt(t0.Add(time.Hour)) }),
			t0, t0, t0.Add(time.Hour), authv1alpha1.ReasonRotationRequested},
		{"a request later than the period: the period first", mk(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(DefaultPeriod + time.Hour))
		}), t0, t0, t0.Add(DefaultPeriod), authv1alpha1.ReasonRotationDue},
		{"a request served by this key", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = mt(t0) }),
			t0, t0.Add(time.Hour), t0.Add(DefaultPeriod), authv1alpha1.ReasonRotationDue},
		{"a request in the key's second, sub-second later", mk(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(900 * time.Millisecond))
		}), t0, t0.Add(time.Hour), t0.Add(DefaultPeriod), authv1alpha1.ReasonRotationDue},
		{"clock skew: a request from a clock ahead of ours waits for its time", mk(func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.RequestedAt = mt(t0.Add(3 * time.Second))
		}), t0, t0.Add(time.Second), t0.Add(3 * time.Second), authv1alpha1.ReasonRotationRequested},
		{"clock skew: a key issued by a clock ahead still rotates a period after its issue", mk(none),
			t0.Add(time.Minute), t0, t0.Add(time.Minute + DefaultPeriod), authv1alpha1.ReasonRotationDue},
		{"disabled: never", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true }), t0, t0, time.Time{}, ""},
		{"expired: never", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.ExpiresAt = mt(t0) }), t0, t0, time.Time{}, ""},
		{"not yet expired: as usual", mk(func(m *authv1alpha1.MeterrAPIKey) { m.Spec.ExpiresAt = mt(t0.Add(time.Hour)) }),
			t0, t0, t0.Add(DefaultPeriod), authv1alpha1.ReasonRotationDue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rotationSchedule(tc.mak, tc.issuedAt, tc.now)
			if !r.at.Equal(tc.at) || r.reason != tc.reason {
				t.Fatalf("rotationSchedule = %v %q, want %v %q", r.at, r.reason, tc.at, tc.reason)
			}
			if r.due(tc.now) != (!tc.at.IsZero() && !tc.now.Before(tc.at)) {
				t.Fatalf("due(%v) = %v", tc.now, r.due(tc.now))
			}
		})
	}
}

func TestDropUndelivered(t *testing.T) {
	v := func(id string, exp *metav1.Time) record.Version {
		return record.Version{ID: id, Hash: "h" + id, ExpiresAt: exp}
	}
	in := []record.Version{v("old", mt(t0)), v("delivered", nil), v("crashed", nil), v("reported", nil)}
	out := dropUndelivered(in, "hdelivered", &authv1alpha1.CurrentKeyStatus{ID: "reported"})
	var ids []string
	for _, x := range out {
		ids = append(ids, x.ID)
	}
	if fmt.Sprint(ids) != "[old delivered reported]" {
		t.Fatalf("kept %v, want the crashed version dropped", ids)
	}
}
