package webhookserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/extauthz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/nginx"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// keyring is a set of keys indexed the same way in every fixture it is put
// into, so that fixtures made one after the other decide alike.
type keyring struct {
	std, ro, ip, dom, one string
}

func newKeyring(t *testing.T) keyring {
	return keyring{std: newKey(t, "production"), ro: newKey(t, "production"), ip: newKey(t, "production"),
		dom: newKey(t, "production"), one: newKey(t, "production")}
}

// fixture returns a new fixture holding the keys, the one-request key's
// request already spent.
func (k keyring) fixture(t *testing.T) *fixture {
	f := newFixture(t, func(c *ServerConfig) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	f.add("std", standard(), k.std)
	ro := standard()
	ro.Permissions = []string{"read"}
	f.add("ro", ro, k.ro)
	ip := standard()
	ip.IPAllowlist = []string{"203.0.113.0/24"}
	f.add("ip", ip, k.ip)
	dom := standard()
	dom.Domains = []string{"*.example.com"}
	f.add("dom", dom, k.dom)
	one := standard()
	one.RequestsPerHour = 1
	f.add("one", one, k.one)
	spend := request.Request{Endpoint: request.EndpointCheck, Credential: "Bearer " + k.one}
	f.srv.decide(context.Background(), &spend, t0)
	return f
}

// facts is what a front-end made of its request, in the terms of the one
// decision: the credential, the client by the one trust rule, the origin
// host, the permission required, and whether the front-end refused it.
func facts(s *Server, r *request.Request) string {
	return fmt.Sprintf("credential=%q client=%v origin=%q required=%v refused=%v",
		r.Credential, s.client(r), r.Headers.OriginHost(), r.Required, r.Refusal != nil)
}

// One request value, rendered through every front-end (HTTP forward-auth,
// NGINX mode, HTTP verify, gRPC Check, and whois's Explain): each converts
// its own form of the request back into the same facts, and answers exactly
// what rendering the one decision of those facts gives.
func TestOneRequestEveryFrontEnd(t *testing.T) {
	k := newKeyring(t)
	for _, tc := range []struct {
		name     string
		key      string
		peer     string
		xff      string
		origin   string
		required authz.Permission
		code     authz.Code
	}{
		{name: "allowed", key: k.std, peer: "192.0.2.1", code: authz.OK},
		{name: "allowed, permission", key: k.std, peer: "192.0.2.1", required: authz.Write, code: authz.OK},
		{name: "no key", peer: "192.0.2.1", code: authz.InvalidAPIKey},
		{name: "malformed", key: "mtr_live_nope", peer: "192.0.2.1", code: authz.InvalidAPIKey},
		{name: "insufficient", key: k.ro, peer: "192.0.2.1", required: authz.Write, code: authz.InsufficientPermissions},
		{name: "ip refused", key: k.ip, peer: "192.0.2.1", code: authz.IPNotAllowed},
		{name: "ip refused, forged XFF", key: k.ip, peer: "192.0.2.1", xff: "203.0.113.9", code: authz.IPNotAllowed},
		{name: "ip allowed through a trusted proxy", key: k.ip, peer: "10.1.1.1", xff: "203.0.113.9", code: authz.OK},
		{name: "domain refused", key: k.dom, peer: "192.0.2.1", origin: "https://evil.example.net", code: authz.DomainNotAllowed},
		{name: "domain allowed", key: k.dom, peer: "192.0.2.1", origin: "https://app.example.com", code: authz.OK},
		{name: "rate limited", key: k.one, peer: "192.0.2.1", code: authz.RateLimitExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The one request value.
			h := http.Header{}
			if tc.xff != "" {
				h["X-Forwarded-For"] = []string{tc.xff}
			}
			if tc.origin != "" {
				h["Origin"] = []string{tc.origin}
			}
			r0 := request.Request{Endpoint: request.EndpointCheck, Peer: netip.MustParseAddr(tc.peer), Headers: request.HTTPHeaders(h), Required: tc.required}
			if tc.key != "" {
				r0.Credential = "Bearer " + tc.key
			}

			// The reference: the one decision of r0, on a fixture of
			// its own (deciding counts).
			ref := k.fixture(t)
			want := ref.srv.decide(context.Background(), &r0, t0)
			if want.Code != tc.code {
				t.Fatalf("decision %s, want %s", want.Code, tc.code)
			}
			wantFacts := facts(ref.srv, &r0)

			// HTTP forward-auth, and NGINX mode.
			for _, nginxMode := range []bool{false, true} {
				f := k.fixture(t)
				hr := httpFrom(&r0, nginxMode)
				got := f.srv.httpRequest(hr, request.EndpointCheck)
				got.Required = r0.Required // check reads the query after httpRequest
				if g := facts(f.srv, &got); g != wantFacts {
					t.Errorf("HTTP converts into\n%s\nwant\n%s", g, wantFacts)
				}
				w := httptest.NewRecorder()
				f.srv.ServeHTTP(w, hr)
				exp := httptest.NewRecorder()
				if nginxMode {
					nginx.Write(exp, &want)
				} else {
					answer.WriteHTTP(exp, &want)
				}
				sameHTTP(t, fmt.Sprintf("nginx=%v", nginxMode), w, exp)
			}

			// HTTP verify, for a request that requires nothing.
			if tc.required == 0 {
				f := k.fixture(t)
				hr := httpFrom(&r0, false)
				hr.URL.Path, hr.URL.RawQuery = request.VerifyPath, ""
				w := httptest.NewRecorder()
				f.srv.ServeHTTP(w, hr)
				v := ref.srv.core.AnswerOf(&want.Decision, false, nil)
				exp := httptest.NewRecorder()
				answer.WriteHTTP(exp, &v)
				sameHTTP(t, "verify", w, exp)
			}

			// Envoy's Check over gRPC.
			f := k.fixture(t)
			cr, ctx := checkFrom(&r0)
			got := f.srv.checkRequest(ctx, cr)
			if g := facts(f.srv, &got); g != wantFacts {
				t.Errorf("gRPC converts into\n%s\nwant\n%s", g, wantFacts)
			}
			resp, err := f.srv.extAuthz.Check(ctx, cr)
			if err != nil {
				t.Fatal(err)
			}
			if exp := extauthz.Response(&want); !proto.Equal(resp, exp) {
				t.Errorf("gRPC answers\n%v\nwant\n%v", resp, exp)
			}

			// whois: Explain, through the same path, says the same
			// answer and the facts it used.
			f = k.fixture(t)
			x := f.srv.Explain(context.Background(), r0, nil)
			if x.Status != want.Code.Status() || x.Code != want.Code.String() || x.Type != want.Code.Type() {
				t.Errorf("whois answers %d %s %s, want %d %s", x.Status, x.Code, x.Type, want.Code.Status(), want.Code)
			}
			if g := fmt.Sprintf("client=%v origin=%q required=%v", x.Client, x.OriginHost, x.Required); g != fmt.Sprintf("client=%v origin=%q required=%v",
				ref.srv.client(&r0), r0.Headers.OriginHost(), r0.Required) {
				t.Errorf("whois used the facts %s", g)
			}
		})
	}
}

// httpFrom is r as an HTTP forward-auth request, the permission in the
// query.
func httpFrom(r *request.Request, nginx bool) *http.Request {
	var q []string
	if r.Required != 0 {
		q = append(q, "permission="+r.Required.String())
	}
	if nginx {
		q = append(q, "mode=nginx")
	}
	target := request.CheckPath
	if len(q) > 0 {
		target += "?" + strings.Join(q, "&")
	}
	hr := httptest.NewRequest(http.MethodGet, target, nil)
	hr.RemoteAddr = netip.AddrPortFrom(r.Peer, 40000).String()
	for _, name := range []string{"X-Forwarded-For", "Origin"} {
		if v := r.Headers.Joined(name, strings.ToLower(name)); v != "" {
			hr.Header[name] = []string{v}
		}
	}
	if r.Credential != "" {
		hr.Header["Authorization"] = []string{r.Credential}
	}
	return hr
}

// checkFrom is r as a CheckRequest from a connection of r's peer, the
// permission in the context extension.
func checkFrom(r *request.Request) (*authv3.CheckRequest, context.Context) {
	h := map[string]string{}
	for _, name := range []string{"X-Forwarded-For", "Origin"} {
		if v := r.Headers.Joined(name, strings.ToLower(name)); v != "" {
			h[strings.ToLower(name)] = v
		}
	}
	if r.Credential != "" {
		h["authorization"] = r.Credential
	}
	var ext map[string]string
	if r.Required != 0 {
		ext = map[string]string{extauthz.PermissionExtension: r.Required.String()}
	}
	cr := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: r.Peer.String()}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: http.MethodGet, Path: "/v1/usage", Headers: h}},
		ContextExtensions: ext,
	}}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(r.Peer, 40000))})
	return cr, ctx
}

func sameHTTP(t *testing.T, what string, got, want *httptest.ResponseRecorder) {
	t.Helper()
	if got.Code != want.Code || got.Body.String() != want.Body.String() || headerText(got.Header()) != headerText(want.Header()) {
		t.Errorf("%s: answers %d %s%s\nwant %d %s%s", what, got.Code, headerText(got.Header()), got.Body, want.Code, headerText(want.Header()), want.Body)
	}
}
