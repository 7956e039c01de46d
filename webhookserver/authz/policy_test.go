package authz

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
)

// t0 is half past an hour, so the window resets in 1800 seconds.
var t0 = time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)

func newKey(t testing.TB) string {
	t.Helper()
	k, err := apikey.Generate(apikey.EnvProduction)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// spec returns a record of name with the standard policy (read and write,
// production, 1000 an hour) and one version per key.
func spec(name string, keys ...string) *RecordSpec {
	s := &RecordSpec{Name: "rec-" + name, Owner: "team-a/" + name, LimitID: "uid-" + name,
		Environment: "production", Permissions: []string{"read", "write"}, Limit: quota.PerHour(1000), Created: t0}
	for _, k := range keys {
		s.Versions = append(s.Versions, VersionSpec{Hash: apikey.HashOf(k).String()})
	}
	return s
}

func TestCompile(t *testing.T) {
	k := newKey(t)
	s := spec("c", k)
	s.LimitID = ""
	s.Permissions = []string{"admin", "read", "future-perm", "read", "bad perm"}
	s.Limit = quota.PerHour(10)
	s.IPAllowlist = []string{"192.0.2.0/24", "::ffff:198.51.100.0/120", "2001:db8::1"}
	s.Domains = []string{"*.Example.com."}
	s.ExpiresAt = t0.Add(time.Hour)
	c := Compile(s)
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0].Error(), "bad perm") {
		t.Fatalf("problems: %v", c.Problems)
	}
	p := c.Policy
	if got := strings.Join(p.Permissions(), ","); got != "read,admin,future-perm" {
		t.Errorf("permissions %q", got)
	}
	if p.class.perms != Read|Admin {
		t.Errorf("mask %v", p.class.perms)
	}
	if p.LimitID() != "record/rec-c" || p.Owner() != "team-a/c" || p.Record() != "rec-c" || p.Limit() != quota.PerHour(10) ||
		p.Environment() != "production" || !p.Restricted() || p.ExpiresAt() != t0.Add(time.Hour).UnixNano() || p.Disabled() || p.NKeys() != 1 || !c.Created.Equal(t0) {
		t.Errorf("policy %+v", p)
	}
	for _, ip := range []string{"192.0.2.77", "198.51.100.3", "2001:db8::1"} {
		if !p.class.allowsIP(netip.MustParseAddr(ip)) {
			t.Errorf("%s refused", ip)
		}
	}
	if p.class.allowsIP(netip.MustParseAddr("192.0.3.1")) || p.class.allowsIP(netip.Addr{}) {
		t.Error("an address outside the allowlist allowed")
	}
	if !p.class.allowsHost("a.b.example.com") || p.class.allowsHost("example.com") || p.class.allowsHost("") {
		t.Error("domain")
	}
	if len(c.Keys) != 1 || c.Keys[0].Hash != apikey.HashOf(k) || c.Keys[0].KeyID != apikey.HashOf(k).ID() {
		t.Fatalf("keys %+v", c.Keys)
	}
	if p.KeyHash(0) != apikey.HashOf(k) {
		t.Error("KeyHash(0) is not the version's hash")
	}
	// The parts an index keeps make the same policy again.
	class, text, key := p.Parts()
	if q := NewPolicy(class, text, key); q != *p || key != quota.Key("record/rec-c") {
		t.Errorf("NewPolicy(Parts()) = %+v, want %+v", q, *p)
	}
}

// Compile never fails as a whole: what it cannot use fails closed.
func TestCompileFailsClosed(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	for _, tc := range []struct {
		name   string
		mut    func(*RecordSpec)
		check  func(*CompiledRecord) bool
		report string
	}{
		{"bad allowlist entries allow nothing", func(s *RecordSpec) { s.IPAllowlist = []string{"10.0.0.1/99"} },
			func(c *CompiledRecord) bool { return c.Policy.class.ipRestricted && len(c.Policy.class.allow) == 0 }, "ipAllowlist"},
		{"bad domains allow nothing", func(s *RecordSpec) { s.Domains = []string{"https://example.com"} },
			func(c *CompiledRecord) bool {
				return c.Policy.class.domainRestricted && len(c.Policy.class.domains) == 0
			}, "domains"},
		{"a bad hash leaves out that version", func(s *RecordSpec) { s.Versions[0].Hash = "zz" },
			func(c *CompiledRecord) bool { return len(c.Keys) == 1 && c.Keys[0].Hash == apikey.HashOf(k2) }, "key version 0"},
		{"a repeated version is left out", func(s *RecordSpec) { s.Versions[1] = s.Versions[0] },
			func(c *CompiledRecord) bool { return len(c.Keys) == 1 }, "repeats"},
		{"a negative limit disables the key", func(s *RecordSpec) { s.Limit.Count = -1 },
			func(c *CompiledRecord) bool { return c.Policy.Disabled() && c.Policy.Limit().Unlimited() }, "negative"},
	} {
		s := spec("x", k1, k2)
		tc.mut(s)
		c := Compile(s)
		if !tc.check(c) {
			t.Errorf("%s: %+v", tc.name, c)
		}
		if len(c.Problems) != 1 || !strings.Contains(c.Problems[0].Error(), tc.report) || !strings.Contains(c.Problems[0].Error(), "rec-x") {
			t.Errorf("%s: problems %v", tc.name, c.Problems)
		}
	}
}

// An unusable version id is replaced by one derived from the hash; the ids
// are cut from the record's one text.
func TestCompileKeyIDs(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	s := spec("ids", k1, k2)
	s.Versions[0].ID, s.Versions[0].ExpiresAt = "v1", t0
	s.Versions[1].ID = "bad id"
	c := Compile(s)
	if c.Keys[0].KeyID != "v1" || !c.Keys[0].ExpiresAt.Equal(t0) || c.Keys[1].KeyID != apikey.HashOf(k2).ID() {
		t.Fatalf("keys %+v", c.Keys)
	}
	for _, k := range c.Keys {
		if c.Policy.text[k.KeyIDAt:int(k.KeyIDAt)+len(k.KeyID)] != k.KeyID {
			t.Errorf("KeyIDAt of %q", k.KeyID)
		}
		if c.Policy.KeyIDOf(k.Hash) != k.KeyID {
			t.Errorf("KeyIDOf the hash of %q = %q", k.KeyID, c.Policy.KeyIDOf(k.Hash))
		}
	}
}

// The parts of a text read back, and the zero Policy (a decision before
// authentication) reads as empty.
func TestCompileText(t *testing.T) {
	s := spec("line", newKey(t))
	s.LimitID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	c := Compile(s)
	p := c.Policy
	if p.LimitID() != s.LimitID || p.Owner() != "team-a/line" || p.Record() != "rec-line" || p.KeyHash(0) != c.Keys[0].Hash ||
		p.KeyID(0) != c.Keys[0].KeyID || p.QuotaKey() != quota.Key(s.LimitID) {
		t.Fatalf("policy parts: %q %q %q %q", p.LimitID(), p.Owner(), p.Record(), p.KeyID(0))
	}
	var z Policy
	if z.Disabled() || z.ExpiresAt() != 0 || z.NKeys() != 0 || z.LimitID() != "" || z.Owner() != "" || z.Record() != "" {
		t.Error("the zero Policy is not empty")
	}
}

// A text holds at most maxVersions versions and maxText bytes: past them the
// oldest versions are used, and a record whose names alone do not fit is
// refused.
func TestCompileTextLimits(t *testing.T) {
	s := spec("many")
	for i := range maxVersions + 3 {
		var h apikey.Hash
		h[0], h[1] = byte(i), byte(i>>8)
		s.Versions = append(s.Versions, VersionSpec{Hash: h.String()})
	}
	c := Compile(s)
	if len(c.Keys) != maxVersions || c.Policy.NKeys() != maxVersions || len(c.Problems) != 1 ||
		!strings.Contains(c.Problems[0].Error(), "the 255 oldest are used") {
		t.Errorf("%d keys, problems %v", len(c.Keys), c.Problems)
	}
	for i, k := range c.Keys {
		if c.Policy.KeyHash(i) != k.Hash {
			t.Fatalf("KeyHash(%d)", i)
		}
	}
	s = spec("huge", newKey(t))
	s.Owner = strings.Repeat("o", maxText)
	c = Compile(s)
	if !c.Policy.Disabled() || len(c.Keys) != 0 || c.Policy.Owner() != "" || len(c.Problems) != 1 ||
		!strings.Contains(c.Problems[0].Error(), "refused") {
		t.Errorf("an oversized record: disabled %v, %d keys, problems %v", c.Policy.Disabled(), len(c.Keys), c.Problems)
	}
}

// Unrestricted keys of one environment, permissions and limit share a class;
// restricted keys each have their own.
func TestCompileInternsClasses(t *testing.T) {
	a, b := Compile(spec("a", newKey(t))), Compile(spec("b", newKey(t)))
	if a.Policy.Class() != b.Policy.Class() {
		t.Error("two standard keys do not share a class")
	}
	other := spec("o", newKey(t))
	other.Limit.Count = 7
	if Compile(other).Policy.Class() == a.Policy.Class() {
		t.Error("a different limit shares the class")
	}
	// A disabled key's class says so (a decision reads it there).
	off := spec("off", newKey(t))
	off.Disabled = true
	if p := Compile(off).Policy; p.Class() == a.Policy.Class() || !p.Disabled() || a.Policy.Disabled() {
		t.Error("a disabled key shares the class of enabled ones")
	}
	r1, r2 := spec("r1", newKey(t)), spec("r2", newKey(t))
	r1.Domains, r2.Domains = []string{"example.com"}, []string{"example.com"}
	if Compile(r1).Policy.Class() == Compile(r2).Policy.Class() {
		t.Error("restricted keys share a class")
	}
}

func TestUnixNano(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want int64
	}{
		{time.Time{}, 0},
		{time.Unix(0, 0), 1},
		{t0, t0.UnixNano()},
		{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 1<<63 - 1},
		{time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), -1<<63 + 1},
	} {
		if got := UnixNano(tc.t); got != tc.want {
			t.Errorf("UnixNano(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
}

func TestParseAllowEntry(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1/32", "10.1.2.3/8": "10.0.0.0/8", "::ffff:10.0.0.0/104": "10.0.0.0/8",
		"::ffff:192.0.2.1": "192.0.2.1/32", "2001:db8::/32": "2001:db8::/32",
	} {
		got, err := ParseAllowEntry(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseAllowEntry(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "example.com", "10.0.0.0/33", "::ffff:0:0/64", "fe80::1%eth0"} {
		if _, err := ParseAllowEntry(bad); err == nil {
			t.Errorf("ParseAllowEntry(%q) succeeded", bad)
		}
	}
}

func TestDomainPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, host string
		want          bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "EXAMPLE.com", true},
		{"example.com", "a.example.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "aexample.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "a..example.com", false},
		{"Example.COM.", "example.com", true},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", true},
	} {
		d, err := parseDomainPattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := d.match(tc.host); got != tc.want {
			t.Errorf("%q matches %q = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
	for _, bad := range []string{"", "*", "*.", "https://example.com", "example.com:443", "exa mple.com", "a..b", "*.*.example.com", "bücher.example"} {
		if _, err := parseDomainPattern(bad); err == nil {
			t.Errorf("parseDomainPattern(%q) succeeded", bad)
		}
	}
}

func FuzzDomainPattern(f *testing.F) {
	for _, s := range [][2]string{{"*.example.com", "a.example.com"}, {"example.com", "EXAMPLE.COM"}, {"*.a.b", ".a.b"}, {"x", "\u212a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		d, err := parseDomainPattern(pattern)
		if err != nil || !d.match(host) {
			return
		}
		h := asciiLower(host)
		if d.wildcard {
			if !strings.HasSuffix(h, d.host) || len(h) == len(d.host) {
				t.Fatalf("%q matches %q", pattern, host)
			}
		} else if h != d.host {
			t.Fatalf("%q matches %q", pattern, host)
		}
	})
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
