package webhookserver

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/internal/ascii"
	"github.com/meterr/meterr-operator/webhookserver/authz"
)

func FuzzAuthorization(f *testing.F) {
	fx := newFixture(f, nil)
	pol := standard()
	pol.RequestsPerHour = 0
	key := fx.add("web", pol)
	for _, s := range []string{
		"Bearer " + key, "bearer " + key, "BEARER   " + key, "Bearer " + key + " ", "Bearer " + key + " x",
		"Basic " + key, "Bearer", "Bearer ", "", "Bearer\t" + key, "Bearer " + key[:len(key)-1],
		"Bearer " + strings.ToUpper(key), "Bearer mtr_test_" + key[9:], "Bearer \xff\xfe", "Bearer " + key + "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, auth string) {
		tok, ok := authz.BearerToken(credential(http.Header{"Authorization": {auth}}))
		if ok {
			if tok == "" || strings.ContainsAny(tok, " \t\r\n") || !ascii.EqualFold(auth[:6], "bearer") {
				t.Fatalf("the token of %q = %q", auth, tok)
			}
		}
		r := httptest.NewRequest(http.MethodGet, verifyPath, nil)
		r.Header["Authorization"] = []string{auth}
		w := httptest.NewRecorder()
		fx.srv.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
			if tok != key {
				t.Fatalf("%q accepted", auth)
			}
		case http.StatusUnauthorized:
			// The answer is the one fixed body: nothing of the input echoed.
			if !bytes.Equal(w.Body.Bytes(), bodyInvalidAPIKey) || w.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Fatalf("401 answer %v %s", w.Header(), w.Body)
			}
		default:
			t.Fatalf("status %d for %q", w.Code, auth)
		}
	})
}

func FuzzClientIP(f *testing.F) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, s := range [][2]string{
		{"10.0.0.1:80", "1.2.3.4"}, {"10.0.0.1:80", "1.2.3.4, 10.1.1.1"}, {"10.0.0.1:80", "10.1.1.1, 10.2.2.2"},
		{"203.0.113.1:80", "1.2.3.4"}, {"[fd00::1]:80", "[2001:db8::1]:443, fd00::2"}, {"10.0.0.1:80", "::ffff:1.2.3.4"},
		{"10.0.0.1:80", "garbage, 1.2.3.4"}, {"10.0.0.1:80", ",,, ,"}, {"[::ffff:10.0.0.1]:1", "1.1.1.1"},
		{"", ""}, {"10.0.0.1:80", "fe80::1%eth0"}, {"10.0.0.1:80", "\xff"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		got := clientIP(remote, []string{xff}, trusted)
		peer := parsePeer(remote)
		if got.IsValid() && (got.Is4In6() || got.Zone() != "") {
			t.Fatalf("clientIP(%q, %q) = %v: not normalised", remote, xff, got)
		}
		if !peer.IsValid() || !isTrusted(peer, trusted) {
			if got != peer {
				t.Fatalf("untrusted peer %q: XFF %q changed the client to %v", remote, xff, got)
			}
			return
		}
		if !got.IsValid() {
			t.Fatalf("trusted peer %q: no client", remote)
		}
		// Several headers mean the same as one joined with commas.
		if split := clientIP(remote, strings.Split(xff, ","), trusted); split != got {
			t.Fatalf("%q: one header gives %v, split headers %v", xff, got, split)
		}
	})
}

func FuzzOriginalRequest(f *testing.F) {
	fx := newFixture(f, func(c *ServerConfig) {
		c.Routes = []Route{{"*", "/", "read"}, {"POST", "/v1/usage", "write"}, {"*", "/v1/billing", "admin"}}
	})
	reader := standard()
	reader.Permissions = []string{"read"}
	reader.RequestsPerHour = 0 // the fuzzer sends more than any hourly limit
	key := fx.add("reader", reader)
	for _, s := range [][8]string{
		{"GET", "/v1/usage", "permission=admin", "", "", "", "", ""},
		{"GET", "", "permission=read", "", "", "", "", ""},
		{"GET", "", "", "POST", "/v1/usage?x", "", "", ""},
		{"GET", "", "", "", "", "POST", "https://h/v1/usage", ""},
		{"GET", "", "", "", "", "", "", "/v1/billing"},
		{"post", "/v1//billing/../usage", "", "", "", "", "", ""},
		{"GET", "/a%2F..%2Fv1%2Fbilling", "", "", "", "", "", ""},
		{"GET", "%2Fv1%2Fbilling", "", "", "", "", "", ""},
		{"GET", "", "", "", "/x;p=1/y", "", "http://[::1]:80/z", "rel"},
		{"GET", "/", "permission=%zz", "", "\xff", "", "", "/\x00"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
	}
	f.Fuzz(func(t *testing.T, method, suffix, rawQuery, xfm, xfu, xom, xourl, xouri string) {
		if method == "" || strings.ContainsAny(method, " \r\n") {
			method = http.MethodGet
		}
		h := http.Header{"Authorization": {"Bearer " + key}}
		for k, v := range map[string]string{"X-Forwarded-Method": xfm, "X-Forwarded-Uri": xfu,
			"X-Original-Method": xom, "X-Original-Url": xourl, "X-Original-Uri": xouri} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		if suffix != "" && suffix[0] != '/' {
			suffix = "/" + suffix
		}
		u := &url.URL{Path: checkPath + suffix, RawQuery: rawQuery}
		if parsed, err := url.ParseRequestURI(checkPath + suffix); err == nil && strings.HasPrefix(parsed.Path, checkPath) &&
			parsed.RawQuery == "" && (parsed.Path == checkPath) == (suffix == "") {
			// As the server parses it: with RawPath when escapes are unusual.
			parsed.RawQuery = rawQuery
			u = parsed
		}
		r := &http.Request{Method: method, URL: u, Header: h, RemoteAddr: "192.0.2.1:1"}
		r = r.WithContext(t.Context())

		found, ok := forEachOriginal(r, func(m, p string) {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("original path %q does not start with /", p)
			}
			if m == "" {
				t.Fatal("empty method")
			}
		})
		if suffix != "" && !found {
			t.Fatal("an appended path is an original request")
		}
		_, present, qok := queryPermission(rawQuery)
		explicit := suffix == "" && present
		want400 := explicit && !qok || !explicit && (!ok || !found)

		w := httptest.NewRecorder()
		fx.srv.ServeHTTP(w, r)
		switch w.Code {
		case 200, 400, 403:
		default:
			t.Fatalf("status %d", w.Code)
		}
		if (w.Code == 400) != want400 {
			t.Fatalf("status %d, want 400: %v: %s", w.Code, want400, w.Body)
		}
	})
}

func FuzzRequestHost(f *testing.F) {
	for _, s := range [][2]string{
		{"https://a.example.com", ""}, {"null", "https://a.example.com/"}, {"", "https://u@h.example:1/p"},
		{"HTTPS://A.EXAMPLE.COM.", ""}, {"https://[::1]", ""}, {"https://a\\@b", ""}, {"\xff://x", ""},
	} {
		f.Add(s[0], s[1])
	}
	// A key restricted to *.example.com, decided as the server decides.
	restricted := authz.Compile(&authz.RecordSpec{Name: "r", Domains: []string{"*.example.com"}})
	allowed := func(host string) bool {
		in := authz.Input{Entry: authz.Entry{Policy: *restricted.Policy, KeyID: "k"}, Found: true, OriginHost: host, Now: t0}
		d := (&authz.Decider{}).Decide(context.Background(), &in)
		return d.Allowed()
	}
	f.Fuzz(func(t *testing.T, origin, referer string) {
		h := http.Header{}
		if origin != "" {
			h["Origin"] = []string{origin}
		}
		if referer != "" {
			h["Referer"] = []string{referer}
		}
		host := requestHost(h)
		if host == "" {
			return
		}
		if strings.HasSuffix(host, ".") || strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != "" {
			t.Fatalf("host %q", host)
		}
		if allowed(host) && !strings.HasSuffix(strings.ToLower(host), ".example.com") {
			t.Fatalf("%q matched *.example.com", host)
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"GET /v1=read", "* /=admin", "post /a=b=write", "GET", "", "GET /x =read"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoute(s)
		if err != nil {
			return
		}
		again, err := ParseRoute(r.String())
		if err != nil || again != r {
			t.Fatalf("%q parses to %+v, which reads back as %+v, %v", s, r, again, err)
		}
		if _, err := compileRoutes([]Route{r}); err != nil {
			t.Fatalf("%+v does not compile: %v", r, err)
		}
	})
}
