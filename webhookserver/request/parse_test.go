package request

import (
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		ok   bool
	}{
		{[]string{"Bearer abc"}, "abc", true},
		{[]string{"bearer abc"}, "abc", true},
		{[]string{"BEARER   abc"}, "abc", true},
		{nil, "", false},
		{[]string{"Bearer abc", "Bearer abc"}, "", false},
		{[]string{"Bearer"}, "", false},
		{[]string{"Bearer "}, "", false},
		{[]string{"Bearerabc"}, "", false},
		{[]string{"Bearer\tabc"}, "", false},
		{[]string{"Bearer abc def"}, "", false},
		{[]string{"Bearer abc\x00"}, "", false},
		{[]string{"Basic abc"}, "", false},
		{[]string{"Token abc"}, "", false},
		{[]string{"Bearer\u00a0abc"}, "", false},
	} {
		got, ok := authz.BearerToken(Credential(http.Header{"Authorization": tc.in}))
		if got != tc.want || ok != tc.ok {
			t.Errorf("the token of %q = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.1.1/32"),
		netip.MustParsePrefix("fd00::/8"),
	}
	for _, tc := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.1:5", nil, "203.0.113.1"},
		{"203.0.113.1:5", []string{"1.2.3.4"}, "203.0.113.1"}, // untrusted peer: XFF ignored
		{"[::ffff:203.0.113.1]:5", nil, "203.0.113.1"},
		{"[2001:db8::1%eth0]:5", nil, "2001:db8::1"},
		{"203.0.113.1", nil, "203.0.113.1"},
		{"garbage", nil, ""},
		{"", nil, ""},
		{"10.0.0.1:5", nil, "10.0.0.1"},
		{"10.0.0.1:5", []string{"1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"6.6.6.6, 1.2.3.4, 10.9.9.9"}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"6.6.6.6", "1.2.3.4", "10.9.9.9, 192.168.1.1"}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"}, // all trusted: left-most
		{"10.0.0.1:5", []string{" 1.2.3.4 ,, "}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"1.2.3.4:8080"}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"[2001:db8::9]:8080"}, "2001:db8::9"},
		{"10.0.0.1:5", []string{"[2001:db8::9]"}, "2001:db8::9"},
		{"10.0.0.1:5", []string{"::ffff:1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.1:5", []string{"::ffff:10.3.3.3"}, "10.3.3.3"},  // mapped, trusted, left-most
		{"10.0.0.1:5", []string{"1.2.3.4, unknown"}, "10.0.0.1"}, // garbage stops the walk
		{"10.0.0.1:5", []string{"unknown, 10.5.5.5"}, "10.5.5.5"},
		{"10.0.0.1:5", []string{"1.2.3.4, \xff"}, "10.0.0.1"},
		{"[fd00::1]:5", []string{"2001:db8::2"}, "2001:db8::2"},
		{"[::ffff:10.0.0.1]:5", []string{"1.2.3.4"}, "1.2.3.4"}, // a mapped trusted peer is trusted
	} {
		got := clientIP(tc.remote, tc.xff, trusted)
		gs := ""
		if got.IsValid() {
			gs = got.String()
		}
		if gs != tc.want {
			t.Errorf("clientIP(%q, %q) = %q, want %q", tc.remote, tc.xff, gs, tc.want)
		}
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.1 ,fd00::/8,")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"10.0.0.1/8", "10.0.0.0/33", "example.com", "10.0.0.0/8;x"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("ParseTrustedProxies(%q) succeeded", bad)
		}
	}
	if _, err := ParseTrustedProxies("10.0.0.1/8"); err == nil || !strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Errorf("a non-canonical CIDR should suggest the canonical one: %v", err)
	}
}

func TestRequestHost(t *testing.T) {
	for _, tc := range []struct {
		h    http.Header
		want string
	}{
		{http.Header{"Origin": {"https://App.Example.com"}}, "App.Example.com"},
		{http.Header{"Origin": {"http://a.example.com:8080"}}, "a.example.com"},
		{http.Header{"Origin": {"https://a.example.com."}}, "a.example.com"},
		{http.Header{"Origin": {"https://u:p@a.example.com/x"}}, "a.example.com"},
		{http.Header{"Origin": {"https://[::1]:8080"}}, ""},
		{http.Header{"Origin": {"null"}}, ""},
		{http.Header{"Origin": {"null"}, "Referer": {"https://a.example.com/"}}, ""},
		{http.Header{"Origin": {"ftp://a.example.com"}}, ""},
		{http.Header{"Origin": {"https://a.example.com", "https://b.example.com"}}, ""},
		{http.Header{"Origin": {"https://a_b.example.com"}}, ""},
		{http.Header{"Origin": {"https://a.example.com\\@evil.com"}}, "a.example.com"},
		{http.Header{"Referer": {"https://a.example.com/p?q#f"}}, "a.example.com"},
		{http.Header{"Referer": {"https://a.example.com?q"}}, "a.example.com"},
		{http.Header{"Referer": {"/relative"}}, ""},
		{http.Header{}, ""},
	} {
		if got := HTTPHeaders(tc.h).OriginHost(); got != tc.want {
			t.Errorf("the origin host of %v = %q, want %q", tc.h, got, tc.want)
		}
	}
}

func TestRoutes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Route
	}{
		{"GET /v1/usage=read", Route{"GET", "/v1/usage", "read"}},
		{"get /v1/usage=read", Route{"GET", "/v1/usage", "read"}},
		{"* /=admin", Route{"*", "/", "admin"}},
		{"POST /a=b=write", Route{"POST", "/a=b", "write"}},
		{"  PUT   /x=write ", Route{"PUT", "/x", "write"}},
	} {
		got, err := ParseRoute(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRoute(%q) = %+v, %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{"", "GET", "GET /x", "/x=read", "GET x=read", "GET /x=billing", "G(T /x=read", "GET /x?y=read", "GET /x y=read", "GET /x="} {
		if _, err := ParseRoute(bad); err == nil {
			t.Errorf("ParseRoute(%q) succeeded", bad)
		}
	}

	table, err := CompileRoutes([]Route{
		{"*", "/v1/", "read"},
		{"*", "/v1/usage", "read"},
		{"POST", "/v1/usage", "write"},
		{"*", "/v1/billing", "admin"},
		{"GET", "/v1/billing/invoices", "read"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		want         authz.Permission
	}{
		{"GET", "/v1/usage", authz.Read},
		{"POST", "/v1/usage", authz.Write},
		{"POST", "/v1/usage/x", authz.Write},
		{"PUT", "/v1/usage", authz.Read},
		{"GET", "/v1/other", authz.Read},
		{"GET", "/v1/billing", authz.Admin},
		{"GET", "/v1/billing-export", authz.Admin},
		{"GET", "/v1/billing/invoices/1", authz.Read},
		{"POST", "/v1/billing/invoices/1", authz.Admin},
		{"GET", "/v2", 0},
		{"GET", "/", 0},
	} {
		if got := table.Match(tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s requires %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestForEachOriginal(t *testing.T) {
	collect := func(r *http.Request) (got []string, found, ok bool) {
		found, ok = ForEachOriginal(r, func(m, p string) { got = append(got, m+" "+p) })
		slices.Sort(got)
		return slices.Compact(got), found, ok
	}
	mk := func(method, target string, h http.Header) *http.Request {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			h = http.Header{}
		}
		return &http.Request{Method: method, URL: u, Header: h}
	}
	for _, tc := range []struct {
		r     *http.Request
		want  []string
		found bool
		ok    bool
	}{
		{mk("GET", CheckPath, nil), nil, false, true},
		{mk("PUT", CheckPath+"/a/b?x=1", nil), []string{"PUT /a/b"}, true, true},
		{mk("GET", CheckPath+"/", nil), []string{"GET /"}, true, true},
		{mk("GET", CheckPath+"/a//b/./c/", nil), []string{"GET /a//b/./c/", "GET /a/b/c/"}, true, true},
		{mk("GET", CheckPath+"/a%2Fb", nil), []string{"GET /a%2Fb", "GET /a/b"}, true, true},
		{mk("GET", CheckPath+"%2Fadmin", nil), []string{"GET /admin"}, true, true},
		{mk("GET", CheckPath+"/%2e%2e/x", nil), []string{"GET /%2e%2e/x", "GET /../x", "GET /x"}, true, true},
		{mk("get", CheckPath+"/a", nil), []string{"GET /a", "get /a"}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Forwarded-Method": {"DELETE"}, "X-Forwarded-Uri": {"/x?y#z"}}), []string{"DELETE /x"}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Original-Method": {"POST"}, "X-Original-Url": {"https://h:1/p/q?r"}}), []string{"POST /p/q"}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Original-Url": {"https://h"}}), []string{"GET /"}, true, true},
		{mk("HEAD", CheckPath, http.Header{"X-Original-Uri": {"/n;jsessionid=1/m"}}), []string{"GET /n/m", "GET /n;jsessionid=1/m", "HEAD /n/m", "HEAD /n;jsessionid=1/m"}, true, true},
		// HEAD is served like GET: GET's rules govern it too.
		{mk("HEAD", CheckPath+"/a", nil), []string{"GET /a", "HEAD /a"}, true, true},
		{mk("head", CheckPath+"/a", nil), []string{"GET /a", "HEAD /a", "head /a"}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Forwarded-Method": {"HEAD"}, "X-Forwarded-Uri": {"/x"}}), []string{"GET /x", "HEAD /x"}, true, true},
		{mk("HEAD", CheckPath, http.Header{"X-Original-Method": {"POST"}, "X-Original-Uri": {"/x"}}), []string{"POST /x"}, true, true},
		// Paths are compared as sent: no case folding.
		{mk("GET", CheckPath+"/V1/Usage", nil), []string{"GET /V1/Usage"}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Original-Uri": {`/a\b`}}), []string{"GET /a/b", `GET /a\b`}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Original-Uri": {"http://h/abs"}}), []string{"GET /abs"}, true, true},
		{mk("GET", CheckPath, http.Header{"X-Original-Uri": {"rel"}}), nil, true, false},
		{mk("GET", CheckPath, http.Header{"X-Original-Uri": {""}}), nil, true, false},
		{mk("GET", CheckPath, http.Header{"X-Original-Uri": {"/a\x00"}}), nil, true, false},
		{mk("GET", CheckPath, http.Header{"X-Forwarded-Uri": {"/a"}, "X-Forwarded-Method": {"GET", "POST"}}), nil, true, false},
		{mk("GET", CheckPath+"/e", http.Header{"X-Forwarded-Uri": {"/f"}, "X-Original-Uri": {"/g"}}), []string{"GET /e", "GET /f", "GET /g"}, true, true},
	} {
		got, found, ok := collect(tc.r)
		if found != tc.found || ok != tc.ok || (ok && !slices.Equal(got, tc.want)) {
			t.Errorf("%s %s %v: got %q found=%v ok=%v; want %q found=%v ok=%v",
				tc.r.Method, tc.r.URL, tc.r.Header, got, found, ok, tc.want, tc.found, tc.ok)
		}
	}
}

func TestQueryPermission(t *testing.T) {
	for _, tc := range []struct {
		q                string
		need             authz.Permission
		present, correct bool
	}{
		{"", 0, false, true},
		{"x=1", 0, false, true},
		{"permission=read", authz.Read, true, true},
		{"permission=read,write", authz.Read | authz.Write, true, true},
		{"permission=read&permission=admin", authz.Read | authz.Admin, true, true},
		{"permission=read%2C+write", authz.Read | authz.Write, true, true},
		{"perm%69ssion=write", authz.Write, true, true},
		{"permission=", 0, true, false},
		{"permission", 0, true, false},
		{"permission=READ", 0, true, false},
		{"permission=%zz", 0, true, false},
		{"permissions=read", 0, false, true},
	} {
		need, present, ok := QueryPermission(tc.q)
		if need != tc.need || present != tc.present || ok != tc.correct {
			t.Errorf("QueryPermission(%q) = %v %v %v", tc.q, need, present, ok)
		}
	}
}
