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

// Check implements envoy.service.auth.v3.Authorization.
func (x *extAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s := x.s
	start := s.clock.Now()
	ctx, cancel := context.WithTimeout(ctx, grpcCallTimeout)
	defer cancel()
	d, body := s.decideCheckRequest(ctx, req, start)
	s.metrics.decisions[d.Code].Inc()
	s.metrics.duration.Observe(s.clock.Since(start).Seconds())
	return s.checkResponse(&d, body), nil
}

// decideCheckRequest works out the facts of a CheckRequest and decides; body
// is the answer of a request it cannot read (invalid_request), else nil.
func (s *Server) decideCheckRequest(ctx context.Context, req *authv3.CheckRequest, now time.Time) (d authz.Decision, body []byte) {
	attrs := req.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	h := hr.GetHeaders()
	if len(h) == 0 {
		// Envoy sends header_map instead with encode_raw_headers.
		h = rawHeaders(hr.GetHeaderMap())
	}
	conn, vouched := s.grpcCaller(ctx)
	claimed := netip.Addr{}
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			claimed = a.Unmap().WithZone("")
		}
	}
	in := authz.Input{OriginHost: originHost(h), Now: now}
	if xff, ok := h["x-forwarded-for"]; ok {
		in.ClientIP = s.clientAddr(conn, vouched, claimed, []string{xff})
	} else {
		in.ClientIP = s.clientAddr(conn, vouched, claimed, nil)
	}
	if s.dlog != nil {
		defer func() {
			s.logCheckDecision(&d, &in, h["authorization"], conn, claimed, h["x-forwarded-for"], hr.GetMethod(), hr.GetPath())
		}()
	}

	explicit := false
	if v, ok := attrs.GetContextExtensions()[PermissionExtension]; ok {
		n, valid := authz.ParsePermissions(v)
		if !valid {
			return authz.Decision{Code: authz.InvalidRequest}, bodyUnknownExtension
		}
		in.Required, explicit = n, true
	}
	if !explicit && len(s.routes) > 0 {
		p, ok := originalPath(hr.GetPath())
		if !ok || hr.GetPath() == "" {
			return authz.Decision{Code: authz.InvalidRequest}, bodyNoOriginalGRPC
		}
		in.Required = s.routes.need(hr.GetMethod(), p)
	}
	return s.decideFrom(ctx, h["authorization"], in, nil), nil
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

// logCheckDecision writes the --log-decisions line of a gRPC check, with the
// fields of the HTTP line (see writeDecisionLine); endpoint is "grpc". Never
// the key.
func (s *Server) logCheckDecision(d *authz.Decision, in *authz.Input, cred string, conn, source netip.Addr, xff, method, path string) {
	droppedBefore, ok := s.admitDecisionLine(d.Code)
	if !ok {
		return
	}
	l := decisionLine{droppedBefore: droppedBefore, code: d.Code, cred: cred, client: in.ClientIP, xff: xff, originHost: in.OriginHost,
		endpoint: "grpc", method: method, required: d.Required}
	if conn.IsValid() {
		l.peer = conn.String()
	}
	if source.IsValid() {
		l.source = source.String()
	}
	if p, ok := originalPath(path); ok {
		l.path = p
	} else if path != "" {
		l.path = "(malformed)"
	}
	if l.required == 0 {
		l.required = in.Required
	}
	s.writeDecisionLine(&l)
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

// originHost is requestHost for Envoy's lower-case header map.
func originHost(h map[string]string) string {
	if v, ok := h["origin"]; ok {
		return hostOfURL(v)
	}
	if v, ok := h["referer"]; ok {
		return hostOfURL(v)
	}
	return ""
}

// need returns what the route rules require of method and path, read as
// forEachOriginal reads an original request: in every spelling of the path,
// with the upper-case method too, and a HEAD request also as GET.
func (t routeTable) need(method, path string) (need authz.Permission) {
	upper := strings.ToUpper(method)
	pathSpellings(path, func(p string) {
		need |= t.match(method, p)
		if upper != method {
			need |= t.match(upper, p)
		}
		if upper == http.MethodHead {
			need |= t.match(http.MethodGet, p)
		}
	})
	return need
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

// checkResponse renders d (with body, see appendBody): allowed, the identity and rate-limit headers for
// the upstream (overwriting any the client sent), the rate-limit headers for
// the client, and authorization removed; denied, the HTTP answer's status,
// headers and error body.
func (s *Server) checkResponse(d *authz.Decision, body []byte) *authv3.CheckResponse {
	hs := s.appendHeaders(make([]header, 0, 12), d, true)
	if d.Allowed() {
		opts := headerOptions(hs, nil)
		ok := &authv3.OkHttpResponse{HeadersToRemove: hvAuthorization, Headers: opts}
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
	status := d.Code.Status()
	denied := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Body:   string(s.appendBody(nil, d, body)),
		Headers: headerOptions(hs, []header{
			{"Content-Type", hvJSON[0]},
			{"Cache-Control", hvNoStore[0]},
			{"X-Content-Type-Options", hvNoSniff[0]},
		}),
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(grpcCodeOf(status)), Message: d.Code.String()},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
}

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
