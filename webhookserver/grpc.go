package webhookserver

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// PermissionExtension is the ext_authz context extension that requires a
// permission ("read", "write", "admin", or several comma-separated), set per
// route in Envoy's ExtAuthzPerRoute check_settings.context_extensions. It
// takes precedence over the route rules, as ?permission= does on HTTP.
const PermissionExtension = "meterr.ai/permission"

// authorizationService is the name the gRPC health service reports the
// ext_authz service under; "" (the whole server) is reported too.
const authorizationService = "envoy.service.auth.v3.Authorization"

// Limits of the gRPC server.
const (
	// grpcCallTimeout bounds one Check, whatever deadline the caller set.
	grpcCallTimeout = 2 * time.Second
	// grpcHeadroom is added to --max-header-bytes for the rest of a
	// CheckRequest (addresses, path, protobuf framing).
	grpcHeadroom = 16 << 10
	// grpcMaxStreams caps the concurrent calls on one connection.
	grpcMaxStreams = 1024
)

// extAuthz is Envoy's ext_authz v3 front-end: it works out the facts of a
// CheckRequest, decides as the HTTP front-end does and renders the Decision
// as a CheckResponse. A well-formed request always gets a CheckResponse,
// never a gRPC error.
type extAuthz struct {
	authv3.UnimplementedAuthorizationServer
	s *Server
}

// NewGRPCServer returns a gRPC server serving envoy.service.auth.v3.Authorization
// for s and the standard health service, whose status the caller sets
// (NOT_SERVING until then). maxHeaderBytes bounds a request as
// --max-header-bytes does on HTTP; tlsConfig, when set, serves over TLS.
func NewGRPCServer(s *Server, maxHeaderBytes int, tlsConfig *tls.Config) (*grpc.Server, *health.Server) {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxHeaderBytes + grpcHeadroom),
		grpc.MaxConcurrentStreams(grpcMaxStreams),
		grpc.ConnectionTimeout(readHeaderTimeout),
		// Envoy pings idle connections every few minutes at most; a
		// client pinging more often than every 10 s is told to go away.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idleTimeout, Time: time.Minute, Timeout: 20 * time.Second}),
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	gs := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(gs, &extAuthz{s: s})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(authorizationService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	return gs, hs
}

// setHealth sets both health statuses.
func setHealth(hs *health.Server, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	hs.SetServingStatus("", st)
	hs.SetServingStatus(authorizationService, st)
}

// Check implements envoy.service.auth.v3.Authorization: it converts the
// CheckRequest (checkRequest), Server.decide answers it, and checkAnswer
// renders the Answer.
func (x *extAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s := x.s
	start := s.clock.Now()
	ctx, cancel := context.WithTimeout(ctx, grpcCallTimeout)
	defer cancel()
	r := s.checkRequest(ctx, req)
	a := s.decide(ctx, &r, start)
	return checkAnswer(&a), nil
}

// checkRequest converts a CheckRequest into a Request: the connection's peer
// (grpcCaller) and the client address it claims, the headers, and the
// permission required by the context extension or by the route rules on the
// original method and path.
func (s *Server) checkRequest(ctx context.Context, req *authv3.CheckRequest) Request {
	attrs := req.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	h := hr.GetHeaders()
	if len(h) == 0 {
		// Envoy sends header_map instead with encode_raw_headers.
		h = rawHeaders(hr.GetHeaderMap())
	}
	r := Request{Endpoint: EndpointGRPC, Credential: h["authorization"], Headers: EnvoyHeaders(h), Method: hr.GetMethod()}
	r.Peer, r.Vouched = s.grpcCaller(ctx)
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			r.Claimed = a.Unmap().WithZone("")
		}
	}
	path, pathOK := originalPath(hr.GetPath())
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
	if len(s.routes) > 0 {
		if !pathOK {
			r.Refusal = bodyNoOriginalGRPC
			return r
		}
		need := authz.Permission(0)
		forOriginal(r.Method, path, func(method, path string) { need |= s.routes.match(method, path) })
		r.Required = need
	}
	return r
}

// grpcCaller returns the address of the connection a call came on and
// whether that peer is vouched for (see clientAddr): its address is in
// --trusted-proxies, or it presented a client certificate that the TLS
// stack verified against --grpc-client-ca (VerifiedChains is set only
// then). No peer, or a peer that is not TCP, is an unknown address.
func (s *Server) grpcCaller(ctx context.Context) (netip.Addr, bool) {
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
	return a, a.IsValid() && isTrusted(a, s.trusted)
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
	bodyUnknownExtension = errorBody(authz.InvalidRequest, "Unknown permission in the "+PermissionExtension+
		" context extension; use read, write or admin")
	bodyNoOriginalGRPC = errorBody(authz.InvalidRequest, "Route rules are configured but the check request has no valid "+
		"attributes.request.http.path")
)

// grpcCodeOf maps an answer's HTTP status to the status of the CheckResponse
// (not of the call, which succeeds): Envoy allows on OK only and answers the
// client with denied_response.
func grpcCodeOf(status int) grpccodes.Code {
	switch status {
	case http.StatusOK:
		return grpccodes.OK
	case http.StatusUnauthorized:
		return grpccodes.Unauthenticated
	case http.StatusForbidden:
		return grpccodes.PermissionDenied
	case http.StatusTooManyRequests:
		return grpccodes.ResourceExhausted
	case http.StatusBadRequest:
		return grpccodes.InvalidArgument
	default:
		return grpccodes.Unavailable
	}
}

// checkAnswer renders a as a CheckResponse: allowed, the identity and
// rate-limit headers for the upstream (overwriting any the client sent),
// the rate-limit headers for the client, and authorization removed;
// denied, the HTTP answer's status, headers and error body.
func checkAnswer(a *Answer) *authv3.CheckResponse {
	hs := make([]header, 0, 12)
	a.eachHeader(func(name string, v []string) { hs = append(hs, header{name, v[0]}) })
	if a.Allowed() {
		opts := headerOptions(hs, nil)
		ok := &authv3.OkHttpResponse{HeadersToRemove: a.remove(), Headers: opts}
		// The client gets the rate-limit headers, never the identity.
		for _, o := range opts {
			if !strings.HasPrefix(o.Header.Key, "x-meterr-") {
				ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, o)
			}
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(grpccodes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}
	status := a.Code.Status()
	denied := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Body:   string(a.appendBody(nil)),
		Headers: headerOptions(hs, []header{
			{"Content-Type", hvJSON[0]},
			{"Cache-Control", hvNoStore[0]},
			{"X-Content-Type-Options", hvNoSniff[0]},
		}),
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(grpcCodeOf(status)), Message: a.Code.String()},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
}

// header is one header of an answer, for a rendering that lists them.
type header struct{ name, value string }

// headerOptions converts first and then hs into header options that
// overwrite, in three allocations.
func headerOptions(hs, first []header) []*corev3.HeaderValueOption {
	n := len(first) + len(hs)
	opts := make([]corev3.HeaderValueOption, n)
	vals := make([]corev3.HeaderValue, n)
	out := make([]*corev3.HeaderValueOption, n)
	for i := range n {
		h := header{}
		if i < len(first) {
			h = first[i]
		} else {
			h = hs[i-len(first)]
		}
		vals[i].Key, vals[i].Value = strings.ToLower(h.name), h.value
		opts[i].Header = &vals[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}
