// Package extauthz is the auth server's front-end for Envoy's ext_authz v3
// gRPC Check: it converts a CheckRequest into one request.Request, the
// Core answers it, and it renders the Answer as a CheckResponse. A
// well-formed request always gets a CheckResponse, never a gRPC error. The
// gRPC server around it (limits, TLS, health) is the process's
// (webhookserver.NewGRPCServer).
package extauthz

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// PermissionExtension is the ext_authz context extension that requires a
// permission ("read", "write", "admin", or several comma-separated), set per
// route in Envoy's ExtAuthzPerRoute check_settings.context_extensions. It
// takes precedence over the route rules, as ?permission= does on HTTP.
const PermissionExtension = "meterr.ai/permission"

// callTimeout bounds one Check, whatever deadline the caller set.
const callTimeout = 2 * time.Second

// Server is Envoy's ext_authz v3 front-end of a Core.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	core *answer.Core
}

// New returns the ext_authz front-end of c.
func New(c *answer.Core) *Server { return &Server{core: c} }

// Register serves s on gs as envoy.service.auth.v3.Authorization.
func (s *Server) Register(gs *grpc.Server) { authv3.RegisterAuthorizationServer(gs, s) }

// Check implements envoy.service.auth.v3.Authorization: it converts the
// CheckRequest (Request), the Core decides it, and Response renders the
// Answer.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := s.core.Now()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r := s.Request(ctx, req)
	a := s.core.Decide(ctx, &r, start)
	return Response(&a), nil
}

// Request converts a CheckRequest into a request.Request: the connection's
// peer (Caller) and the client address it claims, the headers, and the
// permission required by the context extension or by the route rules on the
// original method and path.
func (s *Server) Request(ctx context.Context, req *authv3.CheckRequest) request.Request {
	attrs := req.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	h := hr.GetHeaders()
	if len(h) == 0 {
		// Envoy sends header_map instead with encode_raw_headers.
		h = rawHeaders(hr.GetHeaderMap())
	}
	r := request.Request{Endpoint: request.EndpointGRPC, Headers: request.EnvoyHeaders(h), Method: hr.GetMethod()}
	r.Credential, r.From = s.core.Sources().FromEnvoy(h, hr.GetPath())
	r.Peer, r.Vouched = s.Caller(ctx)
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			r.Claimed = a.Unmap().WithZone("")
		}
	}
	path, pathOK := request.OriginalPath(hr.GetPath())
	if pathOK {
		r.Path = path
	} else if hr.GetPath() != "" {
		r.Path = "(malformed)"
	}

	if v, ok := attrs.GetContextExtensions()[PermissionExtension]; ok {
		n, valid := authz.ParsePermissions(v)
		if !valid {
			r.Refusal = bodyUnknownExtension
			return r
		}
		r.Required = n
		return r
	}
	if routes := s.core.Routes(); len(routes) > 0 {
		if !pathOK {
			r.Refusal = bodyNoOriginal
			return r
		}
		need := authz.Permission(0)
		request.ForOriginal(r.Method, path, func(method, path string) { need |= routes.Match(method, path) })
		r.Required = need
	}
	return r
}

// Caller returns the address of the connection a call came on and
// whether that peer vouched for itself by other means than its address
// (request.Request.Vouched): it presented a client certificate that the
// TLS stack verified against --grpc-client-ca (VerifiedChains is set only
// then). An address in --trusted-proxies vouches by itself: the one trust
// rule (request.Trust.Client) checks it. No peer, or a peer that is not
// TCP, is an unknown address.
func (s *Server) Caller(ctx context.Context) (netip.Addr, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return netip.Addr{}, false
	}
	var a netip.Addr
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		a = tcp.AddrPort().Addr().Unmap().WithZone("")
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
		return a, true
	}
	return a, false
}

// rawHeaders reads Envoy's header_map into the lower-case map of headers;
// repeated headers are joined with "," as Envoy joins them in headers.
func rawHeaders(m *corev3.HeaderMap) map[string]string {
	hs := m.GetHeaders()
	if len(hs) == 0 {
		return nil
	}
	out := make(map[string]string, len(hs))
	for _, hv := range hs {
		k := strings.ToLower(hv.GetKey())
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		if prev, ok := out[k]; ok {
			v = prev + "," + v
		}
		out[k] = v
	}
	return out
}

var (
	bodyUnknownExtension = answer.ErrorBody(authz.InvalidRequest, "Unknown permission in the "+PermissionExtension+
		" context extension; use read, write or admin")
	bodyNoOriginal = answer.ErrorBody(authz.InvalidRequest, "Route rules are configured but the check request has no valid "+
		"attributes.request.http.path")
)
