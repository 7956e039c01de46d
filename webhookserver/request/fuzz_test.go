package request

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

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
		in := authz.Input{Entry: authz.Entry{Policy: *restricted.Policy, KeyID: "k"}, Found: true, OriginHost: host, Now: time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)}
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
		host := HTTPHeaders(h).OriginHost()
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
		if _, err := CompileRoutes([]Route{r}); err != nil {
			t.Fatalf("%+v does not compile: %v", r, err)
		}
	})
}
