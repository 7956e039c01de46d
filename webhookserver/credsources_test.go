package webhookserver

import (
	"net/http"
	"testing"

	grpccodes "google.golang.org/grpc/codes"

	"github.com/meterr/meterr-operator/webhookserver/request"
)

func withSources(t *testing.T, s string) func(*ServerConfig) {
	return func(c *ServerConfig) {
		ss, err := request.ParseSources(s)
		if err != nil {
			t.Fatal(err)
		}
		c.CredentialSources = ss
	}
}

// --credential-sources=header:X-API-Key: every HTTP front-end (verify,
// forward-auth, NGINX mode) accepts the key in X-API-Key, asks the proxy to
// remove that header (not Authorization, which may be the upstream's own),
// and refuses with the documented error JSON when it is absent, doubled or
// sent with Authorization as well.
func TestXAPIKeyOverHTTP(t *testing.T) {
	f := newFixture(t, withSources(t, "authorization,header:X-API-Key"))
	key := f.add("web", standard())
	xkey := http.Header{"X-Api-Key": {key}}
	for _, target := range []string{request.VerifyPath, request.CheckPath, request.CheckPath + "/v1/things", request.CheckPath + "?mode=nginx"} {
		w := f.do(req{target: target, header: xkey})
		if w.Code != http.StatusOK {
			t.Fatalf("%s with X-API-Key: %d %s", target, w.Code, w.Body)
		}
		rm := w.Header().Values("X-Envoy-Auth-Headers-To-Remove")
		if target == request.VerifyPath {
			if len(rm) != 0 {
				t.Errorf("verify asks to remove %q", rm)
			}
			continue
		}
		if len(rm) != 1 || rm[0] != "x-api-key" {
			t.Errorf("%s: X-Envoy-Auth-Headers-To-Remove = %q, want [x-api-key]", target, rm)
		}
		if got := w.Header().Get("X-Meterr-Key-Name"); got != "team-a/web" {
			t.Errorf("%s: identity %q", target, got)
		}
	}
	// Authorization still works, and then it is Authorization that goes.
	w := f.do(req{target: request.CheckPath, key: key})
	if rm := w.Header().Values("X-Envoy-Auth-Headers-To-Remove"); w.Code != 200 || len(rm) != 1 || rm[0] != "authorization" {
		t.Errorf("bearer: %d, remove %q", w.Code, rm)
	}
	for name, r := range map[string]req{
		"both":          {target: request.CheckPath, key: key, header: xkey},
		"two values":    {target: request.CheckPath, header: http.Header{"X-Api-Key": {key, key}}},
		"bearer inside": {target: request.CheckPath, header: http.Header{"X-Api-Key": {"Bearer " + key}}},
		"empty":         {target: request.CheckPath, header: http.Header{"X-Api-Key": {""}}},
		"verify both":   {key: key, header: xkey},
	} {
		w := f.do(r)
		checkCommon(t, w, key)
		if w.Code != http.StatusUnauthorized || errorCode(t, w) != "invalid_api_key" {
			t.Errorf("%s: %d %s, want 401 invalid_api_key", name, w.Code, w.Body)
		}
	}
}

// Without the flag, X-API-Key is an ordinary header: not read, not removed.
func TestXAPIKeyNotReadByDefault(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	w := f.do(req{target: request.CheckPath, header: http.Header{"X-Api-Key": {key}}})
	checkCommon(t, w, key)
	if w.Code != http.StatusUnauthorized || errorCode(t, w) != "invalid_api_key" {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

// Envoy's gRPC Check: the key in x-api-key is accepted and removed; in a
// query parameter (query:api_key) it is accepted and the parameter removed
// from the upstream's path; a key in both is refused.
func TestXAPIKeyAndQueryOverGRPC(t *testing.T) {
	g := newGRPCFixture(t, withSources(t, "header:X-API-Key,query:api_key"))
	key := g.add("web", standard())

	resp := g.check(t, checkReq{headers: map[string]string{"x-api-key": key}})
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != int32(grpccodes.OK) || ok == nil {
		t.Fatalf("x-api-key: %v", resp.GetStatus())
	}
	if got := ok.GetHeadersToRemove(); len(got) != 1 || got[0] != "x-api-key" {
		t.Errorf("headers_to_remove = %q, want [x-api-key]", got)
	}
	if got := ok.GetQueryParametersToRemove(); len(got) != 0 {
		t.Errorf("query_parameters_to_remove = %q", got)
	}

	resp = g.check(t, checkReq{path: "/v1/usage?x=1&api_key=" + key})
	ok = resp.GetOkResponse()
	if resp.GetStatus().GetCode() != int32(grpccodes.OK) || ok == nil {
		t.Fatalf("query: %v", resp.GetStatus())
	}
	if got := ok.GetQueryParametersToRemove(); len(got) != 1 || got[0] != "api_key" {
		t.Errorf("query_parameters_to_remove = %q, want [api_key]", got)
	}
	if got := ok.GetHeadersToRemove(); len(got) != 0 {
		t.Errorf("headers_to_remove = %q", got)
	}

	for name, c := range map[string]checkReq{
		"both":                {headers: map[string]string{"x-api-key": key}, path: "/v1/usage?api_key=" + key},
		"bearer not a source": {key: key},
	} {
		resp := g.check(t, c)
		if status, code := deniedCode(t, resp, key); status != 401 || code != "invalid_api_key" {
			t.Errorf("%s: %d %s, want 401 invalid_api_key", name, status, code)
		}
	}
}
