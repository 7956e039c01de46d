package request

import (
	"net/http"
	"strings"
	"testing"
)

func TestParseSources(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "", want: "authorization"},
		{in: "authorization", want: "authorization"},
		{in: "header:x-api-key", want: "header:X-Api-Key"},
		{in: " authorization , header:X-API-Key ,query:api_key", want: "authorization,header:X-Api-Key,query:api_key"},
		{in: "Header:X-Key", want: "header:X-Key"},
		{in: "header:", err: "header:<Name>"},
		{in: "header:X API", err: "header:<Name>"},
		{in: "query:", err: "query:<name>"},
		{in: "query:a=b", err: "query:<name>"},
		{in: "authorization:x", err: "takes no name"},
		{in: "header:Authorization", err: "use authorization"},
		{in: "header:X-Forwarded-For", err: "cannot hold a key"},
		{in: "header:Cookie", err: "cannot hold a key"},
		{in: "header:X-Meterr-Key-Id", err: "sets"},
		{in: "header:X-Envoy-Auth-Headers-To-Remove", err: "sets"},
		{in: "cookie:session", err: "want authorization"},
		{in: "header:X-Key,header:x-key", err: "listed twice"},
		{in: "authorization,", err: "want authorization"},
	} {
		got, err := ParseSources(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSources(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseSources(%q) = %q, %v; want %q", tc.in, got.String(), err, tc.want)
		}
	}
}

func mustSources(t *testing.T, s string) Sources {
	t.Helper()
	ss, err := ParseSources(s)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// The credential comes from exactly one configured source; two present (or
// two values of one) is ambiguous and yields none, and an unconfigured
// header is never read.
func TestCredentialFromOneSource(t *testing.T) {
	const key = "mtr_live_x"
	for _, tc := range []struct {
		name, sources string
		header        http.Header
		envoy         map[string]string
		path          string
		want          string // the token, "" for none
		from          string // the source's flag form, "" for Authorization
		remove        string
		removeQuery   string
	}{
		{name: "default bearer", sources: "", header: http.Header{"Authorization": {"Bearer " + key}},
			envoy: map[string]string{"authorization": "Bearer " + key}, want: key, remove: "authorization"},
		{name: "default ignores X-API-Key", sources: "", header: http.Header{"X-Api-Key": {key}},
			envoy: map[string]string{"x-api-key": key}},
		{name: "default: two Authorization headers", sources: "", header: http.Header{"Authorization": {"Bearer " + key, "Bearer " + key}}},
		{name: "header source", sources: "header:X-API-Key", header: http.Header{"X-Api-Key": {key}},
			envoy: map[string]string{"x-api-key": key}, want: key, from: "header:X-Api-Key", remove: "x-api-key"},
		{name: "header source, spaces around", sources: "header:X-API-Key", header: http.Header{"X-Api-Key": {" " + key + " "}},
			envoy: map[string]string{"x-api-key": " " + key}, want: key, from: "header:X-Api-Key", remove: "x-api-key"},
		{name: "header source ignores Authorization", sources: "header:X-API-Key", header: http.Header{"Authorization": {"Bearer " + key}},
			envoy: map[string]string{"authorization": "Bearer " + key}},
		{name: "header source: two values", sources: "header:X-API-Key", header: http.Header{"X-Api-Key": {key, key}}},
		{name: "header source: two tokens", sources: "header:X-API-Key", header: http.Header{"X-Api-Key": {key + " " + key}},
			envoy: map[string]string{"x-api-key": key + "," + key + " x"}},
		{name: "both configured, one present", sources: "authorization,header:X-API-Key", header: http.Header{"X-Api-Key": {key}},
			envoy: map[string]string{"x-api-key": key}, want: key, from: "header:X-Api-Key", remove: "x-api-key"},
		{name: "both configured, both present: ambiguous", sources: "authorization,header:X-API-Key",
			header: http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer " + key}},
			envoy:  map[string]string{"x-api-key": key, "authorization": "Bearer " + key}},
		{name: "query, gRPC only", sources: "query:api_key", path: "/v1/things?a=1&api_key=" + key + "#frag",
			envoy: map[string]string{}, want: key, from: "query:api_key", removeQuery: "api_key"},
		{name: "query twice: ambiguous", sources: "query:api_key", path: "/v1/things?api_key=" + key + "&api_key=" + key,
			envoy: map[string]string{}},
		{name: "query unreadable", sources: "query:api_key", path: "/v1/things?api_key=%zz",
			envoy: map[string]string{}},
		{name: "query and header: ambiguous", sources: "header:X-API-Key,query:api_key", path: "/?api_key=" + key,
			envoy: map[string]string{"x-api-key": key}},
		{name: "query configured, header used", sources: "authorization,query:api_key", path: "/v1/things",
			envoy: map[string]string{"authorization": "Bearer " + key}, want: key, remove: "authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := mustSources(t, tc.sources)
			check := func(via, cred string, from *Source) {
				t.Helper()
				tok, ok := Token(cred, from)
				if !ok {
					tok = ""
				}
				if tok != tc.want {
					t.Errorf("%s: token %q, want %q", via, tok, tc.want)
				}
				if tc.want == "" {
					return
				}
				got := ""
				if from != nil && from.Kind != SourceAuthorization {
					got = Sources{*from}.String()
				}
				if got != tc.from {
					t.Errorf("%s: from %q, want %q", via, got, tc.from)
				}
				if rm := strings.Join(from.Remove(), ","); rm != tc.remove {
					t.Errorf("%s: remove %q, want %q", via, rm, tc.remove)
				}
				if rq := strings.Join(from.RemoveQuery(), ","); rq != tc.removeQuery {
					t.Errorf("%s: remove query %q, want %q", via, rq, tc.removeQuery)
				}
			}
			if tc.header != nil || tc.envoy == nil {
				cred, from := ss.FromHTTP(tc.header)
				if tc.removeQuery != "" {
					tc.want = "" // never from a query over HTTP
				}
				check("http", cred, from)
			}
			if tc.envoy != nil {
				cred, from := ss.FromEnvoy(tc.envoy, tc.path)
				check("envoy", cred, from)
			}
		})
	}
}

func TestQuerySourceNotReadOverHTTP(t *testing.T) {
	ss := mustSources(t, "query:api_key")
	if cred, from := ss.FromHTTP(http.Header{}); cred != "" || from != nil {
		t.Fatalf("FromHTTP read a query source: %q %v", cred, from)
	}
	if !ss.HasQuery() || DefaultSources.HasQuery() {
		t.Fatal("HasQuery")
	}
}

// FuzzFromEnvoy: whatever the headers and path, the credential is one of
// the values given (never invented) and reading it never panics.
func FuzzFromEnvoy(f *testing.F) {
	f.Add("x-key", "mtr_live_x", "/p?api_key=mtr_live_y")
	f.Add("authorization", "Bearer a", "/p?api_key=%zz&api_key=")
	ss, err := ParseSources("authorization,header:X-Key,query:api_key")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name, value, path string) {
		cred, from := ss.FromEnvoy(map[string]string{name: value}, path)
		if from == nil && cred != "" && cred != value {
			t.Fatalf("credential %q from no source", cred)
		}
		if from != nil && from.Kind == SourceHeader && cred != value {
			t.Fatalf("header credential %q is not the header's value", cred)
		}
		if from != nil && from.Kind == SourceQuery && !strings.Contains(path, "api_key") {
			t.Fatalf("query credential without the parameter in %q", path)
		}
		_, _ = Token(cred, from)
	})
}
