package webhookserver

import (
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// authorizationService is the name the gRPC health service reports the
// ext_authz service under; "" (the whole server) is reported too.
const authorizationService = "envoy.service.auth.v3.Authorization"

// Limits of the gRPC server.
const (
	// grpcHeadroom is added to --max-header-bytes for the rest of a
	// CheckRequest (addresses, path, protobuf framing).
	grpcHeadroom = 16 << 10
	// grpcMaxStreams caps the concurrent calls on one connection.
	grpcMaxStreams = 1024
)

// NewGRPCServer returns a gRPC server serving envoy.service.auth.v3.Authorization
// for s (its extauthz front-end) and the standard health service, whose status the caller sets
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
	s.extAuthz.Register(gs)
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
