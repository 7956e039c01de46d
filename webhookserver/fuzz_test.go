package webhookserver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/internal/ascii"
	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/request"
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
		tok, ok := authz.BearerToken(request.Credential(http.Header{"Authorization": {auth}}))
		if ok {
			if tok == "" || strings.ContainsAny(tok, " \t\r\n") || !ascii.EqualFold(auth[:6], "bearer") {
				t.Fatalf("the token of %q = %q", auth, tok)
			}
		}
		r := httptest.NewRequest(http.MethodGet, request.VerifyPath, nil)
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
			if !bytes.Equal(w.Body.Bytes(), answer.ErrorBody(authz.InvalidAPIKey, "Invalid API key provided")) || w.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Fatalf("401 answer %v %s", w.Header(), w.Body)
			}
		default:
			t.Fatalf("status %d for %q", w.Code, auth)
		}
	})
}

func FuzzOriginalRequest(f *testing.F) {
	fx := newFixture(f, func(c *ServerConfig) {
		c.Routes = []Route{{Method: "*", Prefix: "/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}, {Method: "*", Prefix: "/v1/billing", Permission: "admin"}}
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
		u := &url.URL{Path: request.CheckPath + suffix, RawQuery: rawQuery}
		if parsed, err := url.ParseRequestURI(request.CheckPath + suffix); err == nil && strings.HasPrefix(parsed.Path, request.CheckPath) &&
			parsed.RawQuery == "" && (parsed.Path == request.CheckPath) == (suffix == "") {
			// As the server parses it: with RawPath when escapes are unusual.
			parsed.RawQuery = rawQuery
			u = parsed
		}
		r := &http.Request{Method: method, URL: u, Header: h, RemoteAddr: "192.0.2.1:1"}
		r = r.WithContext(t.Context())

		found, ok := request.ForEachOriginal(r, func(m, p string) {
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
		_, present, qok := request.QueryPermission(rawQuery)
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
