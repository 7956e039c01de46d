package webhookserver

import (
	"net/http"
	"testing"
)

// An allowed forward-auth answer asks Envoy to remove the key before the
// upstream; verify answers and refusals do not carry the header.
func TestCheckRemovesAuthorization(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	w := f.do(req{key: key, target: checkPath + "/v1/usage"})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if got := w.Header().Values("X-Envoy-Auth-Headers-To-Remove"); len(got) != 1 || got[0] != "authorization" {
		t.Errorf("x-envoy-auth-headers-to-remove = %q, want [authorization]", got)
	}
	for _, r := range []req{
		{key: key}, // verify
		{key: key, target: checkPath + "?permission=admin"}, // denied
		{target: checkPath}, // no key
	} {
		if w := f.do(r); w.Header().Get("X-Envoy-Auth-Headers-To-Remove") != "" {
			t.Errorf("%s: %d answer carries x-envoy-auth-headers-to-remove", r.target, w.Code)
		}
	}
}
