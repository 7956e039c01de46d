package webhookserver

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/webhookserver/request"
)

// An allowed forward-auth answer asks Envoy to remove the key before the
// upstream; verify answers and refusals do not carry the header.
func TestCheckRemovesAuthorization(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	w := f.do(req{key: key, target: request.CheckPath + "/v1/usage"})
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if got := w.Header().Values("X-Envoy-Auth-Headers-To-Remove"); len(got) != 1 || got[0] != "authorization" {
		t.Errorf("x-envoy-auth-headers-to-remove = %q, want [authorization]", got)
	}
	for _, r := range []req{
		{key: key}, // verify
		{key: key, target: request.CheckPath + "?permission=admin"}, // denied
		{target: request.CheckPath},                                 // no key
	} {
		if w := f.do(r); w.Header().Get("X-Envoy-Auth-Headers-To-Remove") != "" {
			t.Errorf("%s: %d answer carries x-envoy-auth-headers-to-remove", r.target, w.Code)
		}
	}
}

// NGINX mode: 401 stays, every other refusal is 403 with the real answer in
// headers from which the body can be rebuilt; allowed answers do not change.
func TestCheckNginxMode(t *testing.T) {
	f := newFixture(t, nil)
	key := f.add("web", standard())
	onePol := standard()
	onePol.RequestsPerHour = 1
	one := f.add("one", onePol)
	f.do(req{key: one, target: request.CheckPath})
	ipPol := standard()
	ipPol.IPAllowlist = []string{"203.0.113.0/24"}
	ipKey := f.add("ip", ipPol)
	for _, tc := range []struct {
		name, key, target string
		status            int
		real, code        string
		header            string
	}{
		{"no key", "", request.CheckPath + "?mode=nginx", 401, "401", "invalid_api_key", "Www-Authenticate"},
		{"insufficient", key, request.CheckPath + "?permission=admin&mode=nginx", 403, "403", "insufficient_permissions", "X-Ratelimit-Remaining"},
		{"ip", ipKey, request.CheckPath + "?mode=nginx", 403, "403", "ip_not_allowed", ""},
		{"rate limit", one, request.CheckPath + "?mode=nginx", 403, "429", "rate_limit_exceeded", "Retry-After"},
		{"bad permission", key, request.CheckPath + "?mode=nginx&permission=billing", 403, "400", "invalid_request", ""},
	} {
		w := f.do(req{key: tc.key, target: tc.target, remote: "192.0.2.1:1234"})
		h := w.Header()
		if w.Code != tc.status || h.Get("X-Meterr-Status") != tc.real || h.Get("X-Meterr-Error-Code") != tc.code {
			t.Errorf("%s: %d %s %s, want %d %s %s", tc.name, w.Code, h.Get("X-Meterr-Status"), h.Get("X-Meterr-Error-Code"), tc.status, tc.real, tc.code)
			continue
		}
		if tc.header != "" && h.Get(tc.header) == "" {
			t.Errorf("%s: no %s", tc.name, tc.header)
		}
		rebuilt := `{"error":{"type":"` + h.Get("X-Meterr-Error-Type") + `","message":"` + h.Get("X-Meterr-Error-Message") +
			`","code":"` + h.Get("X-Meterr-Error-Code") + `"}}` + "\n"
		if rebuilt != w.Body.String() {
			t.Errorf("%s: headers rebuild\n%s\nnot the body\n%s", tc.name, rebuilt, w.Body)
		}
		// Without the mode: the real status.
		plain := strings.Replace(strings.Replace(tc.target, "mode=nginx&", "", 1), "mode=nginx", "", 1)
		if w2 := f.do(req{key: tc.key, target: plain, remote: "192.0.2.1:1234"}); strconv.Itoa(w2.Code) != tc.real || w2.Header().Get("X-Meterr-Status") != "" {
			t.Errorf("%s without the mode: %d", tc.name, w2.Code)
		}
	}
	// Allowed: as without the mode. On an Envoy-style URL the query is the
	// client's own and sets no mode.
	if w := f.do(req{key: key, target: request.CheckPath + "?mode=nginx"}); w.Code != http.StatusOK || w.Header().Get("X-Meterr-Key-Id") == "" {
		t.Errorf("allowed in NGINX mode: %d", w.Code)
	}
	if w := f.do(req{target: request.CheckPath + "/v1/usage?mode=nginx"}); w.Code != http.StatusUnauthorized || w.Header().Get("X-Meterr-Status") != "" {
		t.Errorf("?mode on an Envoy-style URL: %d %v", w.Code, w.Header())
	}
}
