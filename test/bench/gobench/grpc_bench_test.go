package gobench_test

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meterr/meterr-operator/webhookserver"
)

// The gRPC benchmarks of `make bench`: Envoy's ext_authz Check answered by
// the auth server (BenchmarkGRPCCheck, a hit at 100,000 keys) beside a bare
// gRPC Authorization server that answers OK without looking at the request
// (BenchmarkGRPCBare), both over loopback with a real gRPC client on one
// HTTP/2 connection, calls from every P at once. ns/op is the inverse of
// throughput; cpu-ns/op is the process's CPU time (user and system, client
// and server together: both run in the benchmark's process) per call.

// bareAuthz answers every Check with a fixed OK.
type bareAuthz struct {
	authv3.UnimplementedAuthorizationServer
	resp *authv3.CheckResponse
}

func (b *bareAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return b.resp, nil
}

func checkRequest(key string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "192.0.2.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/usage", Host: "api.example.com",
			Headers: map[string]string{"authorization": "Bearer " + key, "user-agent": "bench", "accept": "*/*"}}},
	}}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveGRPC serves gs on loopback and returns a client of it on one
// connection, and what stops both.
func serveGRPC(b *testing.B, gs *grpc.Server) (authv3.AuthorizationClient, func()) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		gs.Stop()
		b.Fatal(err)
	}
	return authv3.NewAuthorizationClient(conn), func() { _ = conn.Close(); gs.Stop() }
}

// runGRPC serves gs on loopback and calls Check from every P.
func runGRPC(b *testing.B, gs *grpc.Server, reqs []*authv3.CheckRequest) {
	b.Helper()
	client, stop := serveGRPC(b, gs)
	defer stop()
	// Connect, and check the answer once.
	resp, err := client.Check(context.Background(), reqs[0])
	if err != nil || resp.GetStatus().GetCode() != 0 {
		b.Fatalf("Check: %v %v", resp, err)
	}
	var next, denied atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := reqs[int(next.Add(1))%len(reqs)]
			resp, err := client.Check(context.Background(), r)
			if err != nil || resp.GetStatus().GetCode() != 0 {
				denied.Add(1)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	if n := denied.Load(); n > 0 {
		b.Fatalf("%d of %d calls failed or were denied", n, b.N)
	}
}

func BenchmarkGRPCCheck(b *testing.B) {
	f := getFixture(b, 100_000)
	srv, ok := f.srv.(*webhookserver.Server)
	if !ok {
		b.Fatalf("fixture server is a %T", f.srv)
	}
	reqs := make([]*authv3.CheckRequest, 0, len(f.hit))
	for _, r := range f.hit {
		reqs = append(reqs, checkRequest(r.Header.Get("Authorization")[len("Bearer "):]))
	}
	gs, _ := webhookserver.NewGRPCServer(srv, webhookserver.DefaultMaxHeaderBytes, nil)
	runGRPC(b, gs, reqs)
}

// BenchmarkGRPCBare answers with a fixed OK: the very answer the auth server
// gives a hit (its identity and rate-limit headers, authorization removed),
// captured once. As with the HTTP baseline, which sends the answer's
// headers, the ratio then measures what the auth server does per call (the
// decision and building its answer), not the cost of carrying a larger
// message, which client and server pay alike in this one process.
func BenchmarkGRPCBare(b *testing.B) {
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, &bareAuthz{resp: okAnswer(b)})
	runGRPC(b, gs, []*authv3.CheckRequest{checkRequest("mtr_not_looked_at")})
}

// okAnswer is the auth server's answer to one hit at 100 keys.
func okAnswer(b *testing.B) *authv3.CheckResponse {
	b.Helper()
	f := getFixture(b, 100)
	srv, ok := f.srv.(*webhookserver.Server)
	if !ok {
		b.Fatalf("fixture server is a %T", f.srv)
	}
	gs, _ := webhookserver.NewGRPCServer(srv, webhookserver.DefaultMaxHeaderBytes, nil)
	client, stop := serveGRPC(b, gs)
	defer stop()
	key := f.hit[0].Header.Get("Authorization")[len("Bearer "):]
	resp, err := client.Check(context.Background(), checkRequest(key))
	if err != nil || resp.GetStatus().GetCode() != 0 || resp.GetOkResponse() == nil {
		b.Fatalf("Check: %v %v", resp, err)
	}
	return resp
}
