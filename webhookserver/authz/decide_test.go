package authz

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
)

// countingLimiter counts in the limit's current window, by the identity's
// name; down makes it a shared limiter that cannot reach its store and
// fails closed.
type countingLimiter struct {
	used  map[string]int64
	down  bool
	takes int
}

func (l *countingLimiter) Take(_ context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time, bool) {
	l.takes++
	if l.down {
		return 0, time.Time{}, false
	}
	_, reset := limit.Window.Index(now)
	name := id.Name()
	if l.used[name] >= limit.Count {
		return 0, reset, false
	}
	l.used[name]++
	return limit.Count - l.used[name], reset, true
}

func (l *countingLimiter) Peek(_ context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time) {
	if l.down {
		return 0, time.Time{}
	}
	_, reset := limit.Window.Index(now)
	return limit.Count - l.used[id.Name()], reset
}

// keyedLimiter is countingLimiter counting by quota key, as the in-memory
// limiter does: ids maps each key back to its identity, so the decision
// must pass the key Compile computed.
type keyedLimiter struct {
	*countingLimiter
	ids map[uint64]string
}

func (l keyedLimiter) Take(ctx context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time, bool) {
	name, ok := l.ids[id.Key]
	if !ok {
		panic("Take of an unknown key")
	}
	return l.countingLimiter.Take(ctx, quota.Named(name), limit, now)
}

func (l keyedLimiter) Peek(ctx context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time) {
	return l.countingLimiter.Peek(ctx, quota.Named(l.ids[id.Key]), limit, now)
}

// entry compiles s and returns the entry of its first version, as an index
// would find it.
func entry(t *testing.T, s *RecordSpec) Entry {
	t.Helper()
	c := Compile(s)
	if len(c.Problems) > 0 {
		t.Fatal(c.Problems)
	}
	k := c.Keys[0]
	return Entry{Policy: *c.Policy, KeyID: k.KeyID, ExpiresAt: k.ExpiresAt}
}

// The decision's rules, in order, as a function of plain facts: authenticate
// (401), restrictions (403, not counted), hourly limit (429 or, uncountable,
// 503), permission (403, counted).
func TestDecide(t *testing.T) {
	key := newKey(t)
	id := apikey.HashOf(key).ID()
	std := func(mut func(*RecordSpec)) Entry {
		s := spec("web", key)
		if mut != nil {
			mut(s)
		}
		return entry(t, s)
	}
	client := netip.MustParseAddr("192.0.2.7")
	for _, tc := range []struct {
		name      string
		env       string
		in        Input
		used      int64 // requests already counted
		down      bool
		code      Code
		rate      RateState
		remaining int64
		taken     bool // whether the request was counted
		retry     int64
	}{
		{name: "no key", in: Input{}, code: InvalidAPIKey},
		{name: "ok", in: Input{Entry: std(nil), Found: true}, code: OK, rate: RateCounted, remaining: 999, taken: true},
		{name: "unlimited", in: Input{Entry: std(func(s *RecordSpec) { s.Limit.Count = 0 }), Found: true}, code: OK},
		{name: "disabled is unknown", in: Input{Entry: std(func(s *RecordSpec) { s.Disabled = true }), Found: true}, code: InvalidAPIKey},
		{name: "key expired", in: Input{Entry: std(func(s *RecordSpec) { s.ExpiresAt = t0 }), Found: true}, code: ExpiredAPIKey},
		{name: "key expires later", in: Input{Entry: std(func(s *RecordSpec) { s.ExpiresAt = t0.Add(time.Second) }), Found: true},
			code: OK, rate: RateCounted, remaining: 999, taken: true},
		{name: "version expired", in: Input{Entry: std(func(s *RecordSpec) { s.Versions[0].ExpiresAt = t0.Add(-time.Second) }), Found: true},
			code: ExpiredAPIKey},
		{name: "environment", env: "staging", in: Input{Entry: std(nil), Found: true}, used: 10,
			code: EnvironmentMismatch, rate: RateCounted, remaining: 990},
		{name: "ip allowed", in: Input{Entry: std(func(s *RecordSpec) { s.IPAllowlist = []string{"192.0.2.0/24"} }), Found: true, ClientIP: client},
			code: OK, rate: RateCounted, remaining: 999, taken: true},
		{name: "ip refused", in: Input{Entry: std(func(s *RecordSpec) { s.IPAllowlist = []string{"198.51.100.0/24"} }), Found: true, ClientIP: client},
			code: IPNotAllowed, rate: RateCounted, remaining: 1000},
		{name: "ip unknown", in: Input{Entry: std(func(s *RecordSpec) { s.IPAllowlist = []string{"0.0.0.0/0"} }), Found: true},
			code: IPNotAllowed, rate: RateCounted, remaining: 1000},
		{name: "domain allowed", in: Input{Entry: std(func(s *RecordSpec) { s.Domains = []string{"*.example.com"} }), Found: true, OriginHost: "App.Example.com"},
			code: OK, rate: RateCounted, remaining: 999, taken: true},
		{name: "domain refused", in: Input{Entry: std(func(s *RecordSpec) { s.Domains = []string{"*.example.com"} }), Found: true, OriginHost: "example.com"},
			code: DomainNotAllowed, rate: RateCounted, remaining: 1000},
		{name: "restricted, limiter down", down: true,
			in:   Input{Entry: std(func(s *RecordSpec) { s.Domains = []string{"example.com"} }), Found: true},
			code: DomainNotAllowed},
		{name: "over the limit", in: Input{Entry: std(nil), Found: true}, used: 1000,
			code: RateLimitExceeded, rate: RateCounted, taken: true, retry: 1800},
		{name: "limiter down", down: true, in: Input{Entry: std(nil), Found: true},
			code: RateLimitUnavailable, rate: RateUnknown, taken: true, retry: 1},
		{name: "permission held", in: Input{Entry: std(nil), Found: true, Required: Write},
			code: OK, rate: RateCounted, remaining: 999, taken: true},
		{name: "permission lacking is counted", in: Input{Entry: std(nil), Found: true, Required: Read | Admin},
			code: InsufficientPermissions, rate: RateCounted, remaining: 999, taken: true},
		{name: "admin grants all", in: Input{Entry: std(func(s *RecordSpec) { s.Permissions = []string{"admin"} }), Found: true, Required: Read | Write},
			code: OK, rate: RateCounted, remaining: 999, taken: true},
		{name: "unknown permission never granted", in: Input{Entry: std(func(s *RecordSpec) { s.Permissions = []string{"billing"} }), Found: true, Required: Read},
			code: InsufficientPermissions, rate: RateCounted, remaining: 999, taken: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := &countingLimiter{used: map[string]int64{"uid-web": tc.used}, down: tc.down}
			dc := Decider{Environment: tc.env, Limiter: lim}
			in := tc.in
			in.Now = t0
			d := dc.Decide(context.Background(), &in)
			if d.Code != tc.code || d.Rate != tc.rate || d.Allowed() != (tc.code == OK) {
				t.Fatalf("%s, rate %d; want %s, rate %d", d.Code, d.Rate, tc.code, tc.rate)
			}
			if (lim.takes > 0) != tc.taken {
				t.Errorf("counted: %v, want %v", lim.takes > 0, tc.taken)
			}
			if d.Rate == RateCounted && (d.Remaining != tc.remaining || d.ResetIn != 1800 || !d.Reset.Equal(t0.Add(30*time.Minute))) {
				t.Errorf("remaining %d, reset %v in %d", d.Remaining, d.Reset, d.ResetIn)
			}
			if got := d.RetryAfter(); got != tc.retry {
				t.Errorf("RetryAfter = %d, want %d", got, tc.retry)
			}
			authenticated := tc.code != InvalidAPIKey && tc.code != ExpiredAPIKey
			if d.Authenticated() != authenticated || authenticated && (d.KeyID != id || d.Policy.Owner() != "team-a/web") {
				t.Errorf("identity %q %q, authenticated %v", d.KeyID, d.Policy.Owner(), d.Authenticated())
			}
			var wantIP netip.Addr
			if tc.code == IPNotAllowed {
				wantIP = in.ClientIP
			}
			if d.ClientIP != wantIP {
				t.Errorf("ClientIP %v, want %v", d.ClientIP, wantIP)
			}
			if d.Required != in.Required {
				t.Errorf("Required %v, want %v", d.Required, in.Required)
			}
		})
	}
}

// With a limiter that counts by key (as the in-memory one does) a decision
// reads nothing of the key's text (with 100,000 keys each read is a cache
// miss): whether the key is disabled comes from its class, its expiry from
// the entry, its count from the quota key.
// The entries here have their text taken away, and decide as before.
func TestDecideKeyedReadsNoText(t *testing.T) {
	std := func(mut func(*RecordSpec)) Entry {
		s := spec("web", newKey(t))
		s.LimitID = "uid-web"
		if mut != nil {
			mut(s)
		}
		e := entry(t, s)
		c, _, key := e.Policy.Parts()
		e.Policy = NewPolicy(c, "", key)
		return e
	}
	for _, tc := range []struct {
		name string
		e    Entry
		used int64
		code Code
	}{
		{"allowed", std(nil), 0, OK},
		{"over the limit", std(nil), 1000, RateLimitExceeded},
		{"disabled", std(func(s *RecordSpec) { s.Disabled = true }), 0, InvalidAPIKey},
		{"key expired", std(func(s *RecordSpec) { s.ExpiresAt = t0 }), 0, ExpiredAPIKey},
		{"version expired", std(func(s *RecordSpec) { s.Versions[0].ExpiresAt = t0 }), 0, ExpiredAPIKey},
		{"key expires after the version", std(func(s *RecordSpec) {
			s.ExpiresAt, s.Versions[0].ExpiresAt = t0.Add(time.Hour), t0.Add(time.Second)
		}), 0, OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := keyedLimiter{&countingLimiter{used: map[string]int64{"uid-web": tc.used}},
				map[uint64]string{quota.Key("uid-web"): "uid-web"}}
			dc := Decider{Limiter: lim}
			in := Input{Entry: tc.e, Found: true, Now: t0}
			if d := dc.Decide(context.Background(), &in); d.Code != tc.code {
				t.Fatalf("%s, want %s", d.Code, tc.code)
			}
		})
	}
}

// Only restricted keys need the client address and origin.
func TestNeedsClient(t *testing.T) {
	plain := entry(t, spec("p", newKey(t)))
	ip := spec("i", newKey(t))
	ip.IPAllowlist = []string{"192.0.2.1"}
	dom := spec("d", newKey(t))
	dom.Domains = []string{"example.com"}
	for _, tc := range []struct {
		in   Input
		want bool
	}{
		{Input{}, false},
		{Input{Entry: plain, Found: true}, false},
		{Input{Entry: entry(t, ip), Found: true}, true},
		{Input{Entry: entry(t, dom), Found: true}, true},
		{Input{Entry: entry(t, dom)}, false},
	} {
		if got := tc.in.NeedsClient(); got != tc.want {
			t.Errorf("NeedsClient(%s) = %v", tc.in.Entry.Policy.Record(), got)
		}
	}
}

// The hit path allocates nothing.
func TestDecideAllocatesNothing(t *testing.T) {
	e := entry(t, spec("web", newKey(t)))
	dc := Decider{Limiter: &countingLimiter{used: map[string]int64{"uid-web": -1 << 40}}}
	in := Input{Entry: e, Found: true, Required: Read, Now: t0}
	if n := testing.AllocsPerRun(100, func() { _ = dc.Decide(context.Background(), &in) }); n != 0 {
		t.Errorf("%v allocations per decision", n)
	}
}

func TestPermissions(t *testing.T) {
	for in, want := range map[string]Permission{"read": Read, "write, admin": Write | Admin, " read ,read": Read} {
		if got, ok := ParsePermissions(in); !ok || got != want {
			t.Errorf("ParsePermissions(%q) = %v, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "read,", "Read", "billing"} {
		if _, ok := ParsePermissions(bad); ok {
			t.Errorf("ParsePermissions(%q) succeeded", bad)
		}
	}
	if (Read|Admin).String() != "read,admin" || Permission(0).String() != "" {
		t.Error("String")
	}
	if !Admin.Grants(Read|Write) || !(Read | Write).Grants(Write) || Read.Grants(Write) || !Read.Grants(0) {
		t.Error("Grants")
	}
}
