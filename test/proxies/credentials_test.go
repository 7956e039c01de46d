package proxies

import (
	"net/http"
	"testing"

	"github.com/meterr/meterr-operator/webhookserver"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// The shipped nginx.conf and Caddyfile, in front of an auth server run with
// --credential-sources=authorization,header:X-API-Key: a key in X-API-Key
// is accepted, and the upstream sees neither it nor Authorization; a bad
// one gets the documented 401; a key in both headers is refused.
func TestXAPIKeyThroughProxies(t *testing.T) {
	for name, proxy := range map[string]func(t *testing.T, auth, upstream string) string{
		"nginx": startNginx,
		"caddy": startCaddy,
	} {
		t.Run(name, func(t *testing.T) {
			auth, k, _ := startAuthWith(t, true, func(c *webhookserver.ServerConfig) {
				ss, err := request.ParseSources("authorization,header:X-API-Key")
				if err != nil {
					t.Fatal(err)
				}
				c.CredentialSources = ss
			})
			base := proxy(t, auth, startUpstream(t))

			saw := upstreamSaw(t, do(t, http.MethodGet, base+"/v1/things", "", map[string]string{"X-API-Key": k.valid}))
			if v := saw.Get("X-Api-Key"); v != "" {
				t.Errorf("the upstream saw X-API-Key")
			}
			if v := saw.Get("Authorization"); v != "" {
				t.Errorf("the upstream saw Authorization")
			}
			if got := saw.Get("X-Meterr-Key-Name"); got != "team-a/web" {
				t.Errorf("upstream identity %q, want team-a/web", got)
			}

			wantError(t, "unknown key in X-API-Key", do(t, http.MethodGet, base+"/v1/things", "", map[string]string{"X-API-Key": newKey(t)}),
				http.StatusUnauthorized, "invalid_api_key")
			wantError(t, "a key in both headers", do(t, http.MethodGet, base+"/v1/things", k.valid, map[string]string{"X-API-Key": k.valid}),
				http.StatusUnauthorized, "invalid_api_key")
			// Bearer still works beside it.
			if saw := upstreamSaw(t, do(t, http.MethodGet, base+"/v1/things", k.valid, nil)); saw.Get("Authorization") != "" {
				t.Errorf("the upstream saw Authorization")
			}
		})
	}
}
