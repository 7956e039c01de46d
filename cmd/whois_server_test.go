package cmd

import (
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver"
	"github.com/meterr/meterr-operator/webhookserver/index"
)

// whois answers what the running auth server answers, for every code a
// fresh count can give, behind --trusted-hops too: the server here is the
// real HTTP front-end, configured by the same flags, serving the same
// record, and sent the request the flags describe.
func TestWhoisAgreesWithTheServer(t *testing.T) {
	restricted := standardPolicy()
	restricted.IPAllowlist = []string{"10.0.0.0/8"}
	restricted.Domains = []string{"app.example.com"}
	disabled := standardPolicy()
	disabled.Disabled = true
	route := []string{"--route", "POST /v1/usage=write", "--route", "GET /v1=read"}
	hops := []string{"--ip", "10.9.9.9", "--trusted-proxies", "10.9.0.0/16", "--origin", "https://app.example.com"}
	for _, tc := range []struct {
		name    string
		policy  record.Policy
		version func(*whoisFixture) string
		args    []string
		code    string
	}{
		{"ok", restricted, nil, []string{"--ip", "10.1.2.3", "--origin", "https://app.example.com"}, "ok"},
		{"unknown key", standardPolicy(), func(f *whoisFixture) string { return f.stranger }, []string{"--ip", "10.1.2.3"}, "invalid_api_key"},
		{"disabled", disabled, nil, []string{"--ip", "10.1.2.3"}, "invalid_api_key"},
		{"tombstone", standardPolicy(), func(f *whoisFixture) string { return f.tombstone }, []string{"--ip", "10.1.2.3"}, "expired_api_key"},
		{"insufficient", standardPolicy(), nil, append([]string{"--method", "POST", "--path", "/v1/usage/events"}, route...), "insufficient_permissions"},
		{"ip", restricted, nil, []string{"--ip", "192.0.2.7", "--origin", "https://app.example.com"}, "ip_not_allowed"},
		{"domain", restricted, nil, []string{"--ip", "10.1.2.3", "--origin", "https://evil.example.net"}, "domain_not_allowed"},
		{"environment", standardPolicy(), nil, []string{"--environment", "staging"}, "environment_mismatch"},
		{"trusted hops: the second address from the right", restricted, nil,
			append([]string{"--trusted-hops", "2", "--forwarded-for", "198.51.100.1, 10.1.2.3"}, hops...), "ip_not_allowed"},
		{"trusted hops: the first address from the right", restricted, nil,
			append([]string{"--trusted-hops", "1", "--forwarded-for", "198.51.100.1, 10.1.2.3"}, hops...), "ok"},
		{"trusted proxies alone: the right-most untrusted", restricted, nil,
			append([]string{"--forwarded-for", "10.1.2.3, 198.51.100.1"}, hops...), "ip_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newWhoisFixture(t, tc.policy)
			key := f.current
			if tc.version != nil {
				key = tc.version(f)
			}
			got := f.json(key, tc.args...).Decision
			if got == nil {
				t.Fatal("no decision")
			}

			var o WhoisOptions
			fs := flag.NewFlagSet("whois", flag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			idx := index.New()
			s := f.objects[0].(*corev1.Secret)
			rec, err := record.Decode(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := idx.Upsert(s.Name, rec, s.CreationTimestamp.Time); err != nil {
				t.Fatal(err)
			}
			srv, err := webhookserver.NewServer(webhookserver.ServerConfig{Index: idx, Clock: clocktesting.NewFakePassiveClock(whoisNow),
				Environment: o.Environment, TrustedProxies: o.TrustedProxies, TrustedHops: o.TrustedHops, Routes: o.Routes,
				Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			srv.SetReady(true)
			method := o.Method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, "/v1/auth/check"+o.Path, nil)
			r.RemoteAddr = ""
			if o.IP != "" {
				r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(o.IP), 40000).String()
			}
			r.Header.Set("Authorization", "Bearer "+key)
			if o.Origin != "" {
				r.Header.Set("Origin", o.Origin)
			}
			if o.ForwardedFor != "" {
				r.Header.Set("X-Forwarded-For", o.ForwardedFor)
			}
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r)
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			_ = json.Unmarshal(w.Body.Bytes(), &body)
			code := body.Error.Code
			if w.Code == http.StatusOK {
				code = "ok"
			}
			if got.Status != w.Code || got.Code != code || got.Message != body.Error.Message || got.Code != tc.code {
				t.Errorf("whois: %d %s %q; the server: %d %s %q; want %s", got.Status, got.Code, got.Message, w.Code, code, body.Error.Message, tc.code)
			}
		})
	}
}
