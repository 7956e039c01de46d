// Package request holds the facts of a request to the auth server, whatever
// protocol it came by (Request), and the rules that read them: the
// credential (Sources, Token), the one trust rule for the client address
// (Trust), the origin host (Headers.OriginHost), the --route rules (Route,
// Routes) and the original request a forward-auth request describes
// (ForEachOriginal, ForOriginal). Every front-end converts into a Request;
// nothing here decides or renders.
package request

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Endpoint names the front-end a request came through, as the decision log
// shows it.
type Endpoint uint8

// The front-ends.
const (
	// EndpointVerify is GET /v1/auth/verify.
	EndpointVerify Endpoint = iota
	// EndpointCheck is HTTP forward-auth on /v1/auth/check, NGINX mode
	// included.
	EndpointCheck
	// EndpointGRPC is Envoy's ext_authz Check over gRPC.
	EndpointGRPC
)

// String is the endpoint's name in the decision log.
func (e Endpoint) String() string {
	switch e {
	case EndpointCheck:
		return "check"
	case EndpointGRPC:
		return "grpc"
	}
	return "verify"
}

// Request is one request to decide, whatever protocol it came by: every
// front-end converts its own request into a Request, answer.Core.Decide
// answers it, and the front-end renders the Answer. Nothing in it is specific to a
// protocol but Headers, which keeps the headers in the form the protocol
// delivered them so that the few the decision may need (X-Forwarded-For,
// Origin, Referer) are read only when it needs them: for a key with
// restrictions (authz.Input.NeedsClient), or for the decision log.
type Request struct {
	// Endpoint is the front-end; forward-auth endpoints (check, gRPC)
	// answer an allowed request with the identity headers.
	Endpoint Endpoint
	// Credential is the value of the one credential source the request
	// used (Sources.FromHTTP, Sources.FromEnvoy): by default its only
	// Authorization value ("Bearer <key>"); "" when there is none, or
	// several. From is that source, nil for Authorization.
	Credential string
	From       *Source

	// The client, as the one trust rule (Trust.Client) reads it.
	// Peer is the connection's own peer; a front-end that has only its
	// text (net/http's RemoteAddr, "ip:port") sets RemoteAddr instead,
	// which is parsed only when the address is needed.
	Peer       netip.Addr
	RemoteAddr string
	// Vouched says the peer proved by other means than its address (a
	// client certificate verified against --grpc-client-ca) that it may
	// speak for others; an address in --trusted-proxies vouches by itself.
	Vouched bool
	// Claimed is the client address the peer states (Envoy's
	// attributes.source.address), believed only from a vouched-for peer.
	Claimed netip.Addr
	// Headers are the request's headers, for X-Forwarded-For, Origin and
	// Referer.
	Headers Headers

	// Method and Path are the original request's, without query or
	// fragment, as the decision log shows them; a front-end may leave them
	// unset when decisions are not logged (answer.Core.LogsDecisions).
	Method, Path string
	// Required is the permission the request needs.
	Required authz.Permission
	// Refusal, when set, is the answer body of a request the front-end
	// could not read (invalid_request): it is refused without a lookup.
	Refusal []byte
}

// Headers are a request's headers as its protocol delivered them: net/http's
// map of canonical names, or Envoy's map of lower-case names (repeated
// headers joined with ","). Only the front-ends make them (HTTPHeaders,
// EnvoyHeaders); the decision reads them by name.
type Headers struct {
	canonical http.Header
	lower     map[string]string
}

// HTTPHeaders are the headers of a net/http request.
func HTTPHeaders(h http.Header) Headers { return Headers{canonical: h} }

// EnvoyHeaders are the headers of an ext_authz CheckRequest.
func EnvoyHeaders(h map[string]string) Headers { return Headers{lower: h} }

// value returns the header's first value (Envoy's: its only one), how many
// values it has and whether it is present at all. name is canonical; the
// lower-case form is looked up in Envoy's map.
func (h Headers) value(name, lower string) (v string, n int, present bool) {
	if h.canonical != nil {
		vs, ok := h.canonical[name]
		if len(vs) > 0 {
			v = vs[0]
		}
		return v, len(vs), ok
	}
	v, ok := h.lower[lower]
	if !ok {
		return "", 0, false
	}
	return v, 1, true
}

// list returns the header's values.
func (h Headers) list(name, lower string) []string {
	if h.canonical != nil {
		return h.canonical[name]
	}
	if v, ok := h.lower[lower]; ok {
		return []string{v}
	}
	return nil
}

// Joined returns the header's values joined with ", ", for the log; name
// is canonical, lower its lower-case form.
func (h Headers) Joined(name, lower string) string {
	if h.canonical != nil {
		return strings.Join(h.canonical[name], ", ")
	}
	return h.lower[lower]
}

// ForwardedFor returns the X-Forwarded-For values.
func (h Headers) ForwardedFor() []string { return h.list("X-Forwarded-For", "x-forwarded-for") }

// PeerAddr returns the connection's own peer.
func (r *Request) PeerAddr() netip.Addr {
	if r.RemoteAddr != "" && !r.Peer.IsValid() {
		return parsePeer(r.RemoteAddr)
	}
	return r.Peer
}

// PeerText is the peer as the decision log shows it: as the front-end had
// it.
func (r *Request) PeerText() string {
	switch {
	case r.RemoteAddr != "":
		return r.RemoteAddr
	case r.Peer.IsValid():
		return r.Peer.String()
	}
	return ""
}

// Token returns the key the request presents (Token of its credential).
func (r *Request) Token() (string, bool) { return Token(r.Credential, r.From) }
