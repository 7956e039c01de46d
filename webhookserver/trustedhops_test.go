package webhookserver

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// --trusted-hops decides the allowlist address on HTTP and gRPC alike (the
// gRPC caller, on loopback, is a trusted gateway).
func TestTrustedHops(t *testing.T) {
	g := newGRPCFixture(t, func(c *ServerConfig) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), loopbackGateway}
		c.TrustedHops = 2
	})
	pol := standard()
	pol.IPAllowlist = []string{"198.51.100.2"}
	key := g.add("ip", pol)
	xff := "203.0.113.66, 198.51.100.2, 35.191.0.7" // forged, client, load balancer
	if w := g.do(req{key: key, remote: "10.1.1.1:80", header: http.Header{"X-Forwarded-For": {xff}}}); w.Code != http.StatusOK {
		t.Errorf("HTTP: %d %s", w.Code, w.Body)
	}
	if resp := g.check(t, checkReq{key: key, source: "10.1.1.1", headers: map[string]string{"x-forwarded-for": xff}}); resp.GetStatus().GetCode() != 0 {
		t.Errorf("gRPC: %v", resp.GetDeniedResponse().GetBody())
	}
	if w := g.do(req{key: key, remote: "10.1.1.1:80", header: http.Header{"X-Forwarded-For": {"198.51.100.2, 203.0.113.66, 35.191.0.7"}}}); w.Code != http.StatusForbidden {
		t.Errorf("HTTP, the client address elsewhere: %d", w.Code)
	}
}

func TestTrustedHopsValidation(t *testing.T) {
	o := DefaultOptions()
	o.TrustedHops = 2
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--trusted-hops: needs --trusted-proxies") {
		t.Errorf("hops without proxies: %v", err)
	}
	o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if err := o.Validate(); err != nil {
		t.Error(err)
	}
	o.TrustedHops = 17
	if err := o.Validate(); err == nil {
		t.Error("17 hops accepted")
	}
}
