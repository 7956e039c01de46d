package webhookserver

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

func TestVerifyOK(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	w := f.do(req{key: key})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	checkCommon(t, w, key)
	want := `{"valid":true,"key_id":"` + apikey.HashOf(key).ID() + `","permissions":["read","write"],"environment":"production",` +
		`"rate_limit":{"limit":1000,"remaining":999,"reset":"` + resetT0 + `"}}` + "\n"
	if w.Body.String() != want {
		t.Fatalf("body\n got %s\nwant %s", w.Body, want)
	}
	h := w.Header()
	for k, v := range map[string]string{
		"X-RateLimit-Limit":     "1000",
		"X-RateLimit-Remaining": "999",
		"X-RateLimit-Reset":     strconv.FormatInt(t0.Truncate(time.Hour).Add(time.Hour).Unix(), 10),
		"RateLimit-Policy":      `"hourly";q=1000;w=3600`,
		"RateLimit":             `"hourly";r=999;t=1800`,
		"WWW-Authenticate":      "",
		"Retry-After":           "",
		// verify is not forward auth: no upstream headers.
		"X-Meterr-Key-Id": "",
	} {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	// The seed's example: a second request shows one less.
	w = f.do(req{key: key, method: http.MethodHead})
	if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "998" {
		t.Fatalf("HEAD: %d remaining %q", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
}

func TestVerifyUnlimited(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.RequestsPerHour = 0
	pol.Permissions = []string{"admin"}
	key := f.add("batch", pol)
	w := f.do(req{key: key})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	checkCommon(t, w, key)
	want := `{"valid":true,"key_id":"` + apikey.HashOf(key).ID() + `","permissions":["admin"],"environment":"production","rate_limit":{"unlimited":true}}` + "\n"
	if w.Body.String() != want {
		t.Fatalf("body\n got %s\nwant %s", w.Body, want)
	}
	if _, none := hasRateLimitHeaders(w.Header()); !none {
		t.Fatalf("unlimited key got rate-limit headers: %v", w.Header())
	}
}

func TestAuthenticationFailures(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	disabled := standard()
	disabled.Disabled = true
	disabledKey := f.add("off", disabled)
	unknown := newKey(t, "production")
	badSum := key[:len(key)-1] + string("0123456789"[(strings.IndexByte("0123456789", key[len(key)-1])+1)%10])
	if strings.IndexByte("0123456789", key[len(key)-1]) < 0 {
		badSum = key[:len(key)-1] + map[bool]string{true: "a", false: "b"}[key[len(key)-1] != 'a']
	}

	for _, tc := range []struct {
		name   string
		auth   []string
		target string
	}{
		{"missing", nil, ""},
		{"empty", []string{""}, ""},
		{"basic scheme", []string{"Basic " + key}, ""},
		{"scheme only", []string{"Bearer"}, ""},
		{"scheme and space", []string{"Bearer "}, ""},
		{"no space", []string{"Bearer" + key}, ""},
		{"two tokens", []string{"Bearer " + key + " " + key}, ""},
		{"token68 padding", []string{"Bearer " + key + "="}, ""},
		{"tab separator", []string{"Bearer\t" + key}, ""},
		{"two headers", []string{"Bearer " + key, "Bearer " + key}, ""},
		{"truncated", []string{"Bearer " + key[:len(key)-1]}, ""},
		{"bad checksum", []string{"Bearer " + badSum}, ""},
		{"wrong prefix", []string{"Bearer mtr_prod_" + key[9:]}, ""},
		{"unknown", []string{"Bearer " + unknown}, ""},
		{"disabled", []string{"Bearer " + disabledKey}, ""},
		{"key in query only", nil, request.VerifyPath + "?api_key=" + key + "&access_token=" + key + "&key=" + key},
		{"non-utf8", []string{"Bearer \xff\xfe" + key[2:]}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(req{target: tc.target, header: http.Header{"Authorization": tc.auth}})
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", w.Code)
			}
			checkCommon(t, w, key, disabledKey, unknown)
			if got := errorCode(t, w); got != "invalid_api_key" {
				t.Fatalf("code %q", got)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != "Bearer" {
				t.Fatalf("WWW-Authenticate = %q", got)
			}
			if _, none := hasRateLimitHeaders(w.Header()); !none {
				t.Fatalf("rate-limit headers on a failed authentication")
			}
		})
	}

	for _, scheme := range []string{"bearer", "BEARER", "BeArEr", "Bearer  "} {
		w := f.do(req{header: http.Header{"Authorization": {scheme + " " + key}}})
		if w.Code != http.StatusOK {
			t.Errorf("scheme %q: status %d", scheme, w.Code)
		}
	}
	// None of that spent the real key's quota (two requests above: 996 left
	// after the next one).
	if w := f.do(req{key: key}); w.Header().Get("X-RateLimit-Remaining") != strconv.Itoa(1000-5) {
		t.Fatalf("remaining %s: failed authentications spent quota", w.Header().Get("X-RateLimit-Remaining"))
	}
}

func TestDisabledIsIdenticalToUnknown(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) { c.Routes = []Route{{Method: "*", Prefix: "/", Permission: "read"}} })
	pol := standard()
	pol.Disabled = true
	pol.IPAllowlist = []string{"10.0.0.0/8"}
	pol.ExpiresAt = mtime(t0.Add(-time.Hour)) // disabled wins over expired too
	disabled := f.add("off", pol)
	unknown := newKey(t, "production")
	for _, target := range []string{request.VerifyPath, request.CheckPath + "/x", request.CheckPath + "?permission=admin"} {
		a := f.do(req{key: disabled, target: target})
		b := f.do(req{key: unknown, target: target})
		if a.Code != b.Code || a.Body.String() != b.Body.String() || !maps.EqualFunc(a.Header(), b.Header(), func(x, y []string) bool {
			return strings.Join(x, "\n") == strings.Join(y, "\n")
		}) {
			t.Fatalf("%s: disabled %d %v %s\nunknown %d %v %s", target, a.Code, a.Header(), a.Body, b.Code, b.Header(), b.Body)
		}
	}
}

func TestExpired(t *testing.T) {
	f := newFixture(t, nil)
	old, cur := newKey(t, "production"), newKey(t, "production")
	r := newRecord("rot", standard(), old, cur)
	r.Keys[0].ExpiresAt = mtime(t0.Add(time.Minute)) // overlap ends in a minute
	if err := f.idx.Upsert("rec-rot", r, t0); err != nil {
		t.Fatal(err)
	}
	if w := f.do(req{key: old}); w.Code != http.StatusOK {
		t.Fatalf("old key within its overlap: %d", w.Code)
	}
	f.clock.SetTime(t0.Add(time.Minute)) // exactly at expiresAt: expired
	w := f.do(req{key: old})
	if w.Code != http.StatusUnauthorized || errorCode(t, w) != "expired_api_key" || w.Header().Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("tombstone: %d %s", w.Code, w.Body)
	}
	checkCommon(t, w, old)
	if _, none := hasRateLimitHeaders(w.Header()); !none {
		t.Fatal("rate-limit headers on an expired key")
	}
	// The tombstone spent nothing: the current key has the second request.
	if w := f.do(req{key: cur}); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "998" {
		t.Fatalf("current key: %d remaining %s", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}

	// spec.expiresAt ends every version.
	pol := standard()
	pol.ExpiresAt = mtime(t0.Add(2 * time.Minute))
	key := f.add("until", pol)
	f.clock.SetTime(t0.Add(2*time.Minute - time.Nanosecond))
	if w := f.do(req{key: key}); w.Code != http.StatusOK {
		t.Fatalf("before expiresAt: %d", w.Code)
	}
	f.clock.SetTime(t0.Add(2 * time.Minute))
	if w := f.do(req{key: key}); w.Code != http.StatusUnauthorized || errorCode(t, w) != "expired_api_key" {
		t.Fatalf("at expiresAt: %d %s", w.Code, w.Body)
	}
}

func TestRestrictions(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	f := newFixture(t, func(c *ServerConfig) { c.TrustedProxies = trusted })
	ipPol := standard()
	ipPol.IPAllowlist = []string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.7"}
	ipKey := f.add("ip", ipPol)
	domPol := standard()
	domPol.Domains = []string{"app.example.com", "*.example.org"}
	domKey := f.add("dom", domPol)

	for _, tc := range []struct {
		name   string
		key    string
		remote string
		header http.Header
		want   string // "" for 200
	}{
		{"ip: peer allowed", ipKey, "203.0.113.9:4000", nil, ""},
		{"ip: single address", ipKey, "198.51.100.7:4000", nil, ""},
		{"ip: single address neighbour", ipKey, "198.51.100.8:4000", nil, "ip_not_allowed"},
		{"ip: peer refused", ipKey, "192.0.2.1:4000", nil, "ip_not_allowed"},
		{"ip: ipv6 peer", ipKey, "[2001:db8::5]:4000", nil, ""},
		{"ip: ipv6 peer refused", ipKey, "[2001:db9::5]:4000", nil, "ip_not_allowed"},
		{"ip: ipv4-mapped peer", ipKey, "[::ffff:203.0.113.9]:4000", nil, ""},
		{"ip: spoofed XFF from untrusted peer", ipKey, "192.0.2.1:4000", http.Header{"X-Forwarded-For": {"203.0.113.9"}}, "ip_not_allowed"},
		{"ip: XFF ignored from untrusted peer", ipKey, "203.0.113.9:4000", http.Header{"X-Forwarded-For": {"192.0.2.1"}}, ""},
		{"ip: trusted proxy, client allowed", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"203.0.113.9"}}, ""},
		{"ip: trusted proxy, client refused", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"192.0.2.1"}}, "ip_not_allowed"},
		{"ip: trusted proxy, no XFF is the proxy", ipKey, "10.1.1.1:80", nil, "ip_not_allowed"},
		{"ip: client forges left of real", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"203.0.113.9, 192.0.2.1"}}, "ip_not_allowed"},
		{"ip: two trusted hops", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"192.0.2.1, 203.0.113.9, 10.2.2.2"}}, ""},
		{"ip: several XFF headers", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"192.0.2.1", "203.0.113.9", "10.2.2.2"}}, ""},
		{"ip: ipv6 trusted hop", ipKey, "[fd00::1]:80", http.Header{"X-Forwarded-For": {"[2001:db8::7]:1234"}}, ""},
		{"ip: garbage XFF", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"not an ip"}}, "ip_not_allowed"},
		{"ip: non-utf8 XFF", ipKey, "10.1.1.1:80", http.Header{"X-Forwarded-For": {"\xff\xfe, 203.0.113.9"}}, ""},

		{"domain: origin", domKey, "", http.Header{"Origin": {"https://app.example.com"}}, ""},
		{"domain: origin upper case with port", domKey, "", http.Header{"Origin": {"HTTPS://APP.Example.COM:8443"}}, ""},
		{"domain: trailing dot", domKey, "", http.Header{"Origin": {"https://app.example.com."}}, ""},
		{"domain: other host", domKey, "", http.Header{"Origin": {"https://evil.example.com"}}, "domain_not_allowed"},
		{"domain: suffix trick", domKey, "", http.Header{"Origin": {"https://app.example.com.evil.net"}}, "domain_not_allowed"},
		{"domain: userinfo trick", domKey, "", http.Header{"Origin": {"https://app.example.com@evil.net"}}, "domain_not_allowed"},
		{"domain: wildcard", domKey, "", http.Header{"Origin": {"https://a.example.org"}}, ""},
		{"domain: wildcard deep", domKey, "", http.Header{"Origin": {"https://a.b.example.org"}}, ""},
		{"domain: wildcard bare", domKey, "", http.Header{"Origin": {"https://example.org"}}, "domain_not_allowed"},
		{"domain: wildcard lookalike", domKey, "", http.Header{"Origin": {"https://badexample.org"}}, "domain_not_allowed"},
		{"domain: referer fallback", domKey, "", http.Header{"Referer": {"https://a.example.org/page?q=1"}}, ""},
		{"domain: referer refused", domKey, "", http.Header{"Referer": {"https://example.net/"}}, "domain_not_allowed"},
		{"domain: origin wins over referer", domKey, "", http.Header{"Origin": {"https://evil.net"}, "Referer": {"https://app.example.com/"}}, "domain_not_allowed"},
		{"domain: origin null", domKey, "", http.Header{"Origin": {"null"}, "Referer": {"https://app.example.com/"}}, "domain_not_allowed"},
		{"domain: neither header", domKey, "", nil, "domain_not_allowed"},
		{"domain: non-utf8 origin", domKey, "", http.Header{"Origin": {"https://app.example.com\xff"}}, "domain_not_allowed"},
		{"domain: no scheme", domKey, "", http.Header{"Origin": {"app.example.com"}}, "domain_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(req{key: tc.key, remote: tc.remote, header: tc.header})
			checkCommon(t, w, ipKey, domKey)
			all, _ := hasRateLimitHeaders(w.Header())
			if !all {
				t.Errorf("a key that authenticated must get rate-limit headers: %v", w.Header())
			}
			if tc.want == "" {
				if w.Code != http.StatusOK {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				return
			}
			if w.Code != http.StatusForbidden || errorCode(t, w) != tc.want {
				t.Fatalf("status %d %s, want 403 %s", w.Code, w.Body, tc.want)
			}
			if w.Header().Get("WWW-Authenticate") != "" {
				t.Fatal("WWW-Authenticate on a 403")
			}
		})
	}
}

// The ip_not_allowed answer says which address it saw: the one the
// allowlist was checked against.
func TestIPNotAllowedMessage(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	pol := standard()
	pol.IPAllowlist = []string{"198.51.100.0/24"}
	key := f.add("ip", pol)
	for _, tc := range []struct {
		remote string
		header http.Header
		want   string
	}{
		{"203.0.113.9:4000", nil, "API key not allowed from 203.0.113.9"},
		{"[::ffff:203.0.113.9]:4000", nil, "API key not allowed from 203.0.113.9"},
		{"[2001:db8::5]:4000", nil, "API key not allowed from 2001:db8::5"},
		{"10.1.1.1:80", http.Header{"X-Forwarded-For": {"192.0.2.1"}}, "API key not allowed from 192.0.2.1"},
		{"203.0.113.9:4000", http.Header{"X-Forwarded-For": {"198.51.100.1"}}, "API key not allowed from 203.0.113.9"},
		{"not-an-address", nil, "API key not allowed from an unknown address"},
	} {
		w := f.do(req{key: key, remote: tc.remote, header: tc.header})
		checkCommon(t, w, key)
		var body struct {
			Error struct{ Type, Message, Code string } `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", tc.remote, err, w.Body)
		}
		if w.Code != http.StatusForbidden || body.Error.Code != "ip_not_allowed" || body.Error.Type != "permission_error" || body.Error.Message != tc.want {
			t.Errorf("%s %v: %d %+v, want 403 with message %q", tc.remote, tc.header, w.Code, body.Error, tc.want)
		}
	}
}

func TestEnvironmentMismatch(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) { c.Environment = "production" })
	staging := standard()
	staging.Environment = "staging"
	key := f.add("stg", staging)
	prod := f.add("prod", standard())
	w := f.do(req{key: key})
	if w.Code != http.StatusForbidden || errorCode(t, w) != "environment_mismatch" {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	if !strings.Contains(w.Body.String(), "production keys") {
		t.Errorf("message should say what the server accepts: %s", w.Body)
	}
	if w := f.do(req{key: prod}); w.Code != http.StatusOK {
		t.Fatalf("production key: %d", w.Code)
	}
	// Without --environment every environment is accepted.
	g := newFixture(t, nil)
	if w := g.do(req{key: g.add("stg", staging)}); w.Code != http.StatusOK {
		t.Fatalf("no --environment: %d", w.Code)
	}
}

func TestRestrictionDenialsDoNotSpendQuota(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.RequestsPerHour = 2
	pol.IPAllowlist = []string{"192.0.2.1"}
	key := f.add("ip", pol)
	for range 10 {
		w := f.do(req{key: key, remote: "198.51.100.1:1"})
		if w.Code != http.StatusForbidden {
			t.Fatalf("status %d", w.Code)
		}
		if got := w.Header().Get("X-RateLimit-Remaining"); got != "2" {
			t.Fatalf("denied request shows remaining %s, want 2 (not spent)", got)
		}
	}
	for i, want := range []int{200, 200, 429} {
		if w := f.do(req{key: key, remote: "192.0.2.1:1"}); w.Code != want {
			t.Fatalf("request %d: %d, want %d", i, w.Code, want)
		}
	}
	// After the limit, a restricted request still reports the count.
	if w := f.do(req{key: key, remote: "198.51.100.1:1"}); w.Code != http.StatusForbidden || w.Header().Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("status %d remaining %s", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
}

func TestHourlyWindow(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.RequestsPerHour = 3
	key := f.add("small", pol)
	for i := range 3 {
		w := f.do(req{key: key})
		if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) {
			t.Fatalf("request %d: %d remaining %s", i, w.Code, w.Header().Get("X-RateLimit-Remaining"))
		}
	}
	w := f.do(req{key: key})
	checkCommon(t, w, key)
	if w.Code != http.StatusTooManyRequests || errorCode(t, w) != "rate_limit_exceeded" {
		t.Fatalf("4th: %d %s", w.Code, w.Body)
	}
	reset := t0.Truncate(time.Hour).Add(time.Hour)
	for k, v := range map[string]string{
		"Retry-After":           "1800",
		"X-RateLimit-Limit":     "3",
		"X-RateLimit-Remaining": "0",
		"X-RateLimit-Reset":     strconv.FormatInt(reset.Unix(), 10),
		"RateLimit-Policy":      `"hourly";q=3;w=3600`,
		"RateLimit":             `"hourly";r=0;t=1800`,
	} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	// Retry-After rounds up.
	f.clock.SetTime(reset.Add(-500 * time.Millisecond))
	if w := f.do(req{key: key}); w.Header().Get("Retry-After") != "1" {
		t.Fatalf("half a second before reset: Retry-After %q", w.Header().Get("Retry-After"))
	}
	// The next UTC hour is a new window.
	f.clock.SetTime(reset)
	w = f.do(req{key: key})
	if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "2" || w.Header().Get("RateLimit") != `"hourly";r=2;t=3600` {
		t.Fatalf("new window: %d %v", w.Code, w.Header())
	}
	var body struct {
		RateLimit struct {
			Reset string `json:"reset"`
		} `json:"rate_limit"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.RateLimit.Reset != "2025-01-15T13:00:00Z" {
		t.Fatalf("reset %q (%v)", body.RateLimit.Reset, err)
	}
}

func TestRotationSharesQuota(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.RequestsPerHour = 2
	old, cur := newKey(t, "production"), newKey(t, "production")
	r := newRecord("rot", pol, old, cur)
	r.Keys[0].ExpiresAt = mtime(t0.Add(time.Hour))
	if err := f.idx.Upsert("rec-rot", r, t0); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		key  string
		want int
	}{{old, 200}, {cur, 200}, {old, 429}, {cur, 429}} {
		if w := f.do(req{key: tc.key}); w.Code != tc.want {
			t.Fatalf("request %d: %d, want %d", i, w.Code, tc.want)
		}
	}
	// Rotating again (a new record content, same owner) keeps the count.
	newer := newKey(t, "production")
	r.Keys = append(r.Keys, record.NewVersion(newer, t0))
	if err := f.idx.Upsert("rec-rot", r, t0); err != nil {
		t.Fatal(err)
	}
	if w := f.do(req{key: newer}); w.Code != http.StatusTooManyRequests {
		t.Fatalf("after another rotation: %d", w.Code)
	}
}

func TestInvalidKeysDoNotSpendQuota(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.RequestsPerHour = 1
	key := f.add("one", pol)
	for range 20 {
		f.do(req{key: newKey(t, "production")})
		f.do(req{key: key[:20]})
		f.do(req{header: http.Header{"Authorization": {"Bearer " + key + "x"}}})
	}
	if w := f.do(req{key: key}); w.Code != http.StatusOK {
		t.Fatalf("real key after invalid ones: %d", w.Code)
	}
}

func TestPermissions(t *testing.T) {
	f := newFixture(t, nil)
	reader := standard()
	reader.Permissions = []string{"read"}
	readKey := f.add("reader", reader)
	admin := standard()
	admin.Permissions = []string{"admin"}
	adminKey := f.add("admin", admin)

	for _, tc := range []struct {
		name   string
		key    string
		target string
		status int
		code   string
	}{
		{"verify needs nothing", readKey, request.VerifyPath, 200, ""},
		{"check without permission", readKey, request.CheckPath, 200, ""},
		{"check read", readKey, request.CheckPath + "?permission=read", 200, ""},
		{"check write refused", readKey, request.CheckPath + "?permission=write", 403, "insufficient_permissions"},
		{"check read and write", readKey, request.CheckPath + "?permission=read,write", 403, "insufficient_permissions"},
		{"check repeated", readKey, request.CheckPath + "?permission=read&permission=admin", 403, "insufficient_permissions"},
		{"admin grants write", adminKey, request.CheckPath + "?permission=write", 200, ""},
		{"admin grants all", adminKey, request.CheckPath + "?permission=read%2Cwrite%2Cadmin", 200, ""},
		{"unknown permission", readKey, request.CheckPath + "?permission=billing", 400, "invalid_request"},
		{"empty permission", readKey, request.CheckPath + "?permission=", 400, "invalid_request"},
		{"bad escape", readKey, request.CheckPath + "?permission=%zz", 400, "invalid_request"},
		{"other parameters ignored", readKey, request.CheckPath + "?foo=bar&permission=read", 200, ""},
		{"envoy mode ignores the client's query", readKey, request.CheckPath + "/v1/usage?permission=admin", 200, ""},
		{"envoy mode ignores unknown values too", readKey, request.CheckPath + "/v1/usage?permission=nonsense", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(req{key: tc.key, target: tc.target})
			checkCommon(t, w, tc.key)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" && errorCode(t, w) != tc.code {
				t.Fatalf("body %s, want %s", w.Body, tc.code)
			}
		})
	}
	// A permission denial is counted (it comes after the limiter).
	before := f.do(req{key: readKey}).Header().Get("X-RateLimit-Remaining")
	w := f.do(req{key: readKey, target: request.CheckPath + "?permission=write"})
	after := f.do(req{key: readKey}).Header().Get("X-RateLimit-Remaining")
	b, _ := strconv.Atoi(before)
	a, _ := strconv.Atoi(after)
	if b-a != 2 || w.Header().Get("X-RateLimit-Remaining") != strconv.Itoa(b-1) {
		t.Fatalf("remaining %d then %d (403 showed %s): a permission denial must be counted", b, a, w.Header().Get("X-RateLimit-Remaining"))
	}
}

func TestCheckAllowedHeaders(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	w := f.do(req{key: key, target: request.CheckPath, method: http.MethodPost})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	checkCommon(t, w, key)
	for k, v := range map[string]string{
		"X-Meterr-Key-Id":      apikey.HashOf(key).ID(),
		"X-Meterr-Key-Name":    "team-a/web",
		"X-Meterr-Permissions": "read,write",
		"X-Meterr-Environment": "production",
		"X-RateLimit-Limit":    "1000",
	} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(w.Body.String(), `{"valid":true,`) {
		t.Errorf("body %s", w.Body)
	}
	// Denials carry no upstream headers.
	w = f.do(req{key: key, target: request.CheckPath + "?permission=admin"})
	if w.Code != http.StatusForbidden || w.Header().Get("X-Meterr-Key-Id") != "" {
		t.Fatalf("denied check: %d %v", w.Code, w.Header())
	}
}

func TestForwardAuthStyles(t *testing.T) {
	routes := []Route{
		{Method: "*", Prefix: "/v1/", Permission: "read"},
		{Method: "POST", Prefix: "/v1/usage", Permission: "write"},
		{Method: "*", Prefix: "/v1/usage", Permission: "read"},
		{Method: "*", Prefix: "/v1/billing", Permission: "admin"},
		{Method: "GET", Prefix: "/v1/billing/invoices", Permission: "read"},
	}
	f := newFixture(t, func(c *ServerConfig) { c.Routes = routes })
	reader := standard()
	reader.Permissions = []string{"read"}
	key := f.add("reader", reader)
	writer := standard()
	writer.Permissions = []string{"read", "write"}
	wkey := f.add("writer", writer)

	type tc struct {
		name   string
		method string
		target string
		header http.Header
		key    string
		status int
	}
	cases := []tc{
		// Envoy ext_authz: the original path appended, the client's method.
		{"envoy GET usage", "GET", request.CheckPath + "/v1/usage", nil, key, 200},
		{"envoy POST usage", "POST", request.CheckPath + "/v1/usage/events", nil, key, 403},
		{"envoy POST usage writer", "POST", request.CheckPath + "/v1/usage/events", nil, wkey, 200},
		{"envoy billing", "GET", request.CheckPath + "/v1/billing", nil, key, 403},
		{"envoy longer GET rule", "GET", request.CheckPath + "/v1/billing/invoices/7", nil, key, 200},
		{"envoy longer GET rule, other method", "DELETE", request.CheckPath + "/v1/billing/invoices/7", nil, key, 403},
		{"envoy unmatched path", "GET", request.CheckPath + "/healthz", nil, key, 200},
		{"envoy query ignored", "GET", request.CheckPath + "/v1/usage?permission=admin", nil, key, 200},
		{"envoy doubled slash", "GET", request.CheckPath + "/v1//billing", nil, key, 403},
		{"envoy dot segment", "GET", request.CheckPath + "/v1/usage/../billing", nil, key, 403},
		{"envoy encoded", "GET", request.CheckPath + "/v1/%62illing", nil, key, 403},
		{"envoy path parameter", "GET", request.CheckPath + "/v1;x=1/billing", nil, key, 403},
		{"envoy lower-case method", "post", request.CheckPath + "/v1/usage", nil, key, 403},
		// Traefik, Caddy.
		{"traefik GET", "GET", request.CheckPath, http.Header{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/v1/usage?x=1"}}, key, 200},
		{"traefik POST", "GET", request.CheckPath, http.Header{"X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/v1/usage"}}, key, 403},
		{"traefik no method uses request's", "POST", request.CheckPath, http.Header{"X-Forwarded-Uri": {"/v1/usage"}}, key, 403},
		// ingress-nginx.
		{"ingress-nginx GET", "GET", request.CheckPath, http.Header{"X-Original-Method": {"GET"}, "X-Original-Url": {"https://api.example.com/v1/usage?y=2"}}, key, 200},
		{"ingress-nginx POST", "GET", request.CheckPath, http.Header{"X-Original-Method": {"POST"}, "X-Original-Url": {"https://api.example.com/v1/usage"}}, key, 403},
		{"ingress-nginx billing", "GET", request.CheckPath, http.Header{"X-Original-Method": {"GET"}, "X-Original-Url": {"http://api.example.com:8080/v1/billing"}}, key, 403},
		{"ingress-nginx root", "GET", request.CheckPath, http.Header{"X-Original-Url": {"https://api.example.com"}}, key, 200},
		// NGINX auth_request.
		{"nginx GET", "GET", request.CheckPath, http.Header{"X-Original-Uri": {"/v1/usage"}}, key, 200},
		{"nginx request method", "POST", request.CheckPath, http.Header{"X-Original-Uri": {"/v1/usage"}}, key, 403},
		{"nginx X-Original-Method", "GET", request.CheckPath, http.Header{"X-Original-Method": {"POST"}, "X-Original-Uri": {"/v1/usage"}}, key, 403},
		// Every description must be satisfied: a client-added header can
		// only add requirements.
		{"spoofed extra header", "GET", request.CheckPath, http.Header{"X-Forwarded-Uri": {"/public"}, "X-Original-Uri": {"/v1/billing"}}, key, 403},
		{"spoofed header in envoy mode", "GET", request.CheckPath + "/v1/billing", http.Header{"X-Forwarded-Uri": {"/public"}}, key, 403},
		// ?permission= on the bare URL replaces the rules.
		{"explicit permission", "GET", request.CheckPath + "?permission=read", http.Header{"X-Original-Uri": {"/v1/billing"}}, key, 200},
		// Malformed or missing descriptions.
		{"no original request", "GET", request.CheckPath, nil, key, 400},
		{"relative original", "GET", request.CheckPath, http.Header{"X-Forwarded-Uri": {"v1/usage"}}, key, 400},
		{"bad original URL", "GET", request.CheckPath, http.Header{"X-Original-Url": {"::/x"}}, key, 400},
		{"two original URIs", "GET", request.CheckPath, http.Header{"X-Original-Uri": {"/a", "/b"}}, key, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(req{method: c.method, target: c.target, header: c.header, key: c.key})
			checkCommon(t, w, c.key)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			switch c.status {
			case 403:
				if errorCode(t, w) != "insufficient_permissions" {
					t.Fatalf("body %s", w.Body)
				}
			case 400:
				if errorCode(t, w) != "invalid_request" {
					t.Fatalf("body %s", w.Body)
				}
			}
		})
	}

	// Without rules, any valid key is enough on every style.
	g := newFixture(t, nil)
	gk := g.add("x", reader)
	if w := g.do(req{key: gk, target: request.CheckPath}); w.Code != 200 {
		t.Fatalf("no rules, bare check: %d", w.Code)
	}
	if w := g.do(req{key: gk, target: request.CheckPath + "/v1/billing", method: "DELETE"}); w.Code != 200 {
		t.Fatalf("no rules, envoy check: %d", w.Code)
	}
}

// A GET rule governs HEAD too, since upstreams serve HEAD as GET: a HEAD
// request needs what its HEAD rules and its GET rules require, together.
// Paths match case-sensitively.
func TestRoutesHeadFollowsGet(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) {
		c.Routes = []Route{
			{Method: "*", Prefix: "/v1/", Permission: "read"},
			{Method: "GET", Prefix: "/v1/reports", Permission: "write"},
			{Method: "HEAD", Prefix: "/v1/ping", Permission: "read"},
			{Method: "GET", Prefix: "/v1/ping", Permission: "admin"},
			{Method: "HEAD", Prefix: "/v1/open", Permission: "read"},
			{Method: "GET", Prefix: "/v1/open", Permission: "read"},
			{Method: "POST", Prefix: "/v1/reports", Permission: "admin"},
		}
	})
	reader := standard()
	reader.Permissions = []string{"read"}
	rkey := f.add("reader", reader)
	wkey := f.add("writer", standard())

	for _, c := range []struct {
		name   string
		method string
		target string
		header http.Header
		key    string
		status int
	}{
		{"envoy GET rule, GET", "GET", request.CheckPath + "/v1/reports/7", nil, rkey, 403},
		{"envoy GET rule, HEAD", "HEAD", request.CheckPath + "/v1/reports/7", nil, rkey, 403},
		{"envoy GET rule, HEAD, lower case", "head", request.CheckPath + "/v1/reports/7", nil, rkey, 403},
		{"envoy GET rule, HEAD, enough", "HEAD", request.CheckPath + "/v1/reports/7", nil, wkey, 200},
		{"envoy HEAD rule weaker than GET rule", "HEAD", request.CheckPath + "/v1/ping", nil, wkey, 403},
		{"envoy HEAD and GET rules agree", "HEAD", request.CheckPath + "/v1/open", nil, rkey, 200},
		{"envoy other method unaffected", "POST", request.CheckPath + "/v1/reports", nil, wkey, 403},
		{"envoy HEAD elsewhere", "HEAD", request.CheckPath + "/v1/other", nil, rkey, 200},
		{"traefik HEAD", "GET", request.CheckPath, http.Header{"X-Forwarded-Method": {"HEAD"}, "X-Forwarded-Uri": {"/v1/reports"}}, rkey, 403},
		{"ingress-nginx HEAD", "GET", request.CheckPath, http.Header{"X-Original-Method": {"HEAD"}, "X-Original-Url": {"https://h/v1/reports"}}, rkey, 403},
		{"nginx HEAD request method", "HEAD", request.CheckPath, http.Header{"X-Original-Uri": {"/v1/reports"}}, rkey, 403},
		{"nginx X-Original-Method wins over the request's HEAD", "HEAD", request.CheckPath, http.Header{"X-Original-Method": {"PUT"}, "X-Original-Uri": {"/v1/reports"}}, rkey, 200},
		// Case-sensitive: /v1/Reports is not /v1/reports (only "* /v1/" applies).
		{"path case as sent", "GET", request.CheckPath + "/v1/Reports", nil, rkey, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(req{method: c.method, target: c.target, header: c.header, key: c.key})
			checkCommon(t, w, c.key)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			if c.status == 403 && errorCode(t, w) != "insufficient_permissions" {
				t.Fatalf("body %s", w.Body)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		w := f.do(req{key: key, method: m})
		checkCommon(t, w)
		if w.Code != http.StatusMethodNotAllowed || errorCode(t, w) != "invalid_request" || w.Header().Get("Allow") != "GET, HEAD" {
			t.Fatalf("%s /v1/auth/verify: %d %v %s", m, w.Code, w.Header(), w.Body)
		}
	}
	for _, p := range []string{"/", "/v1/auth", "/v1/auth/verify/x", "/v1/auth/checkx", "/metrics"} {
		w := f.do(req{key: key, target: p})
		checkCommon(t, w)
		if w.Code != http.StatusNotFound || errorCode(t, w) != "invalid_request" {
			t.Fatalf("%s: %d %s", p, w.Code, w.Body)
		}
	}
	if w := f.do(req{target: "/healthz"}); w.Code != 200 {
		t.Fatalf("healthz %d", w.Code)
	}
	if w := f.do(req{target: "/readyz"}); w.Code != 200 {
		t.Fatalf("readyz after sync: %d", w.Code)
	}
}

// Before the first full load a valid key may simply not be indexed yet: the
// server must not call it invalid. It answers 503 not_ready with Retry-After,
// and keeps deciding once loaded even while draining (unready) for shutdown.
func TestNotLoaded(t *testing.T) {
	f := &fixture{t: t, clock: clocktesting.NewFakeClock(t0), idx: index.New(), lim: ratelimit.NewMemory()}
	srv, err := NewServer(ServerConfig{Index: f.idx, Limiter: f.lim, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	key := f.add("web", standard())
	if w := f.do(req{target: "/readyz"}); w.Code != http.StatusServiceUnavailable || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("readyz before sync: %d", w.Code)
	}
	for _, target := range []string{request.VerifyPath, request.CheckPath, request.CheckPath + "/api/x"} {
		w := f.do(req{key: key, target: target})
		// Not a denial: the one 5xx the server gives, and only before it is loaded.
		if w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" ||
			w.Code != http.StatusServiceUnavailable || errorCode(t, w) != "not_ready" || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("%s before sync: %d %v %s", target, w.Code, w.Header(), w.Body)
		}
	}
	if w := f.do(req{target: "/healthz"}); w.Code != 200 {
		t.Fatalf("healthz before sync: %d", w.Code)
	}
	srv.SetReady(true)
	if w := f.do(req{key: key}); w.Code != 200 {
		t.Fatalf("verify after sync: %d %s", w.Code, w.Body)
	}
	srv.SetReady(false) // draining
	if w := f.do(req{target: "/readyz"}); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", w.Code)
	}
	if w := f.do(req{key: key}); w.Code != 200 {
		t.Fatalf("verify while draining: %d %s", w.Code, w.Body)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	f.do(req{key: key})
	f.do(req{key: key})
	f.do(req{key: newKey(t, "production")})
	f.do(req{key: key, target: request.CheckPath + "?permission=admin"})
	f.do(req{key: key, target: request.CheckPath + "?permission=nope"})
	f.do(req{target: "/healthz"}) // not a decision
	for code, want := range map[string]float64{
		"ok": 2, "invalid_api_key": 1, "insufficient_permissions": 1, "invalid_request": 1, "expired_api_key": 0,
	} {
		got := decisionCount(t, f.reg, code)
		if got != want {
			t.Errorf("decisions{code=%q} = %v, want %v", code, got, want)
		}
	}
	out, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var observed uint64
	for _, mf := range out {
		if mf.GetName() == "meterr_auth_request_duration_seconds" {
			observed = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if observed != 5 {
		t.Errorf("histogram has %d observations, want 5", observed)
	}
	for _, mf := range out {
		if strings.Contains(mf.String(), key) || strings.Contains(mf.String(), apikey.HashOf(key).String()) ||
			strings.Contains(mf.String(), apikey.HashOf(key).ID()) {
			t.Fatalf("metric %s holds key material", mf.GetName())
		}
	}
}

func TestNewServerErrors(t *testing.T) {
	idx := index.New()
	for _, c := range []ServerConfig{
		{},
		{Index: idx, Environment: "prod"},
		{Index: idx, Routes: []Route{{Method: "GET", Prefix: "/a", Permission: "read"}, {Method: "get", Prefix: "/a", Permission: "write"}}},
		{Index: idx, Routes: []Route{{Method: "GET", Prefix: "a", Permission: "read"}}},
	} {
		if _, err := NewServer(c); err == nil {
			t.Errorf("NewServer(%+v) succeeded", c)
		}
	}
}

// A policy class is rendered on its first answer (see textOf); requests that
// race for it get the same answer (run with -race for the slot itself).
func TestClassTextFirstUseConcurrent(t *testing.T) {
	f := newFixture(t, nil)
	pol := standard()
	pol.Domains = []string{"app.example.com"} // a class of its own, rendered by no earlier test
	key := f.add("web", pol)
	var wg sync.WaitGroup
	bodies := make([]string, 8)
	for i := range bodies {
		wg.Go(func() {
			hr := httptest.NewRequest(http.MethodGet, request.CheckPath, nil)
			hr.Header.Set("Authorization", "Bearer "+key)
			hr.Header.Set("Origin", "https://app.example.com")
			w := httptest.NewRecorder()
			f.srv.ServeHTTP(w, hr)
			if w.Code != http.StatusOK || w.Header().Get("X-Meterr-Permissions") != "read,write" {
				t.Errorf("%d %v", w.Code, w.Header())
			}
			bodies[i] = w.Body.String()
		})
	}
	wg.Wait()
	for _, b := range bodies {
		if !strings.Contains(b, `"permissions":["read","write"],"environment":"production","rate_limit":{"limit":1000,`) {
			t.Fatalf("answer %s", b)
		}
	}
}
