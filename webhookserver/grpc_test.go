package webhookserver

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/webhookserver/frontend/extauthz"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// grpcFixture serves a fixture's Server over gRPC on loopback and holds a
// real client to it.
type grpcFixture struct {
	*fixture
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
	health *health.Server
}

func newGRPCFixture(t *testing.T, mut func(*ServerConfig)) *grpcFixture {
	t.Helper()
	f := newFixture(t, mut)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, hs := NewGRPCServer(f.srv, DefaultMaxHeaderBytes, nil)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &grpcFixture{fixture: f, client: authv3.NewAuthorizationClient(conn), conn: conn, health: hs}
}

// checkReq describes a CheckRequest.
type checkReq struct {
	key     string // "Authorization: Bearer <key>" unless empty
	source  string // attributes.source.address.socket_address.address
	method  string
	path    string
	headers map[string]string
	ext     map[string]string
}

func (c checkReq) build() *authv3.CheckRequest {
	h := map[string]string{}
	for k, v := range c.headers {
		h[k] = v
	}
	if c.key != "" {
		h["authorization"] = "Bearer " + c.key
	}
	if c.method == "" {
		c.method = http.MethodGet
	}
	if c.path == "" {
		c.path = "/v1/usage"
	}
	if c.source == "" {
		c.source = "192.0.2.1"
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: c.source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: c.method, Path: c.path, Headers: h, Host: "api.example.com"}},
		ContextExtensions: c.ext,
	}}
}

func (g *grpcFixture) check(t *testing.T, c checkReq) *authv3.CheckResponse {
	t.Helper()
	return g.checkRaw(t, c.build())
}

func (g *grpcFixture) checkRaw(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := g.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: a well-formed request got a gRPC error: %v", err)
	}
	return resp
}

// deniedCode returns the denial's HTTP status and the error code of its body,
// checking the body's shape and the headers every answer carries.
func deniedCode(t *testing.T, resp *authv3.CheckResponse, secrets ...string) (int, string) {
	t.Helper()
	if resp.GetStatus().GetCode() == int32(grpccodes.OK) || resp.GetOkResponse() != nil {
		t.Fatalf("allowed, want a denial: %v", resp)
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("no denied_response: %v", resp)
	}
	var body struct {
		Error struct{ Type, Message, Code string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Error.Type == "" || body.Error.Message == "" {
		t.Fatalf("body %q is not the seed's error JSON: %v", d.GetBody(), err)
	}
	hs := headerMap(d.GetHeaders())
	if hs["content-type"] != "application/json" || hs["cache-control"] != "no-store" {
		t.Errorf("denial headers %v", hs)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(resp.String(), s) {
			t.Errorf("denial echoes the key")
		}
	}
	return int(d.GetStatus().GetCode()), body.Error.Code
}

func headerMap(hs []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			panic("header " + h.GetHeader().GetKey() + " does not overwrite")
		}
		m[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return m
}

func TestGRPCAllowed(t *testing.T) {
	g := newGRPCFixture(t, nil)
	key := g.add("web", standard())
	resp := g.check(t, checkReq{key: key, headers: map[string]string{"x-meterr-key-id": "forged"}})
	if resp.GetStatus().GetCode() != int32(grpccodes.OK) {
		t.Fatalf("status %v", resp.GetStatus())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("no ok_response: %v", resp)
	}
	if got := ok.GetHeadersToRemove(); len(got) != 1 || got[0] != "authorization" {
		t.Errorf("headers_to_remove = %q, want [authorization]", got)
	}
	hs := headerMap(ok.GetHeaders())
	for k, v := range map[string]string{
		"x-meterr-key-id":       hs["x-meterr-key-id"],
		"x-meterr-key-name":     "team-a/web",
		"x-meterr-permissions":  "read,write",
		"x-meterr-environment":  "production",
		"x-ratelimit-limit":     "1000",
		"x-ratelimit-remaining": "999",
		"ratelimit-policy":      `"hourly";q=1000;w=3600`,
		"ratelimit":             `"hourly";r=999;t=1800`,
	} {
		if hs[k] != v || v == "" || v == "forged" {
			t.Errorf("ok_response header %s = %q, want %q", k, hs[k], v)
		}
	}
	if strings.Contains(resp.String(), key) {
		t.Error("the answer echoes the key")
	}
	// The client sees its rate-limit headers, never the identity.
	rs := headerMap(ok.GetResponseHeadersToAdd())
	if rs["x-ratelimit-remaining"] != "999" || rs["x-meterr-key-id"] != "" {
		t.Errorf("response_headers_to_add %v", rs)
	}
}

// loopbackGateway is --trusted-proxies for the gRPC fixture's own client: a
// gateway trusted to state where a request comes from, as Envoy is in front
// of the auth server. Tests of the address rule use it; without it the
// caller's claims are ignored (grpctrust_test.go).
var loopbackGateway = netip.MustParsePrefix("127.0.0.1/32")

// Every code of the error table, and the same answer as HTTP gives for the
// same request: one decision, two front-ends. The gRPC caller is a trusted
// gateway stating the HTTP request's peer as attributes.source.address.
func TestGRPCDenials(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), loopbackGateway}
	g := newGRPCFixture(t, func(c *ServerConfig) { c.TrustedProxies = trusted; c.Environment = "production" })
	key := g.add("web", standard())
	old := newKey(t, "production")
	r := newRecord("old", standard(), old)
	r.Keys[0].ExpiresAt = mtime(t0.Add(-time.Minute))
	if err := g.idx.Upsert("rec-old", r, t0); err != nil {
		t.Fatal(err)
	}
	readOnly := standard()
	readOnly.Permissions = []string{"read"}
	roKey := g.add("ro", readOnly)
	ipPol := standard()
	ipPol.IPAllowlist = []string{"203.0.113.0/24"}
	ipKey := g.add("ip", ipPol)
	domPol := standard()
	domPol.Domains = []string{"app.example.com"}
	domKey := g.add("dom", domPol)
	stPol := standard()
	stPol.Environment = "staging"
	stKey := g.add("st", stPol, newKey(t, "staging"))
	onePol := standard()
	onePol.RequestsPerHour = 1
	oneKey := g.add("one", onePol)
	g.check(t, checkReq{key: oneKey}) // spends the only request

	for _, tc := range []struct {
		name   string
		c      checkReq
		http   req
		status int
		code   string
		header string // a header the denial must carry
	}{
		{"no key", checkReq{}, req{}, 401, "invalid_api_key", "www-authenticate"},
		{"malformed key", checkReq{key: "mtr_nope"}, req{key: "mtr_nope"}, 401, "invalid_api_key", "www-authenticate"},
		{"unknown key", checkReq{key: newKey(t, "production")}, req{}, 401, "invalid_api_key", "www-authenticate"},
		{"expired", checkReq{key: old}, req{key: old}, 401, "expired_api_key", "www-authenticate"},
		{"insufficient (extension)", checkReq{key: roKey, ext: map[string]string{extauthz.PermissionExtension: "write"}},
			req{key: roKey, target: request.CheckPath + "?permission=write"}, 403, "insufficient_permissions", "x-ratelimit-remaining"},
		{"ip", checkReq{key: ipKey, source: "192.0.2.1"}, req{key: ipKey, remote: "192.0.2.1:40000"}, 403, "ip_not_allowed", "x-ratelimit-limit"},
		{"ip: forged XFF from an untrusted source", checkReq{key: ipKey, source: "192.0.2.1", headers: map[string]string{"x-forwarded-for": "203.0.113.9"}},
			req{key: ipKey, remote: "192.0.2.1:40000", header: http.Header{"X-Forwarded-For": {"203.0.113.9"}}}, 403, "ip_not_allowed", ""},
		{"ip: trusted proxy, client refused", checkReq{key: ipKey, source: "10.1.1.1", headers: map[string]string{"x-forwarded-for": "203.0.113.9, 192.0.2.7"}},
			req{key: ipKey, remote: "10.1.1.1:40000", header: http.Header{"X-Forwarded-For": {"203.0.113.9, 192.0.2.7"}}}, 403, "ip_not_allowed", ""},
		{"domain", checkReq{key: domKey, headers: map[string]string{"origin": "https://evil.example.net"}},
			req{key: domKey, header: http.Header{"Origin": {"https://evil.example.net"}}}, 403, "domain_not_allowed", ""},
		{"environment", checkReq{key: stKey}, req{key: stKey}, 403, "environment_mismatch", ""},
		{"rate limit", checkReq{key: oneKey}, req{key: oneKey}, 429, "rate_limit_exceeded", "retry-after"},
		{"bad extension", checkReq{key: key, ext: map[string]string{extauthz.PermissionExtension: "billing"}},
			req{key: key, target: request.CheckPath + "?permission=billing"}, 400, "invalid_request", ""},
		{"empty extension", checkReq{key: key, ext: map[string]string{extauthz.PermissionExtension: ""}},
			req{key: key, target: request.CheckPath + "?permission="}, 400, "invalid_request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.http.key == "" {
				tc.http.key = tc.c.key
			}
			if tc.http.target == "" {
				tc.http.target = request.CheckPath
			}
			if tc.http.remote == "" {
				tc.http.remote = "192.0.2.1:40000"
			}
			resp := g.check(t, tc.c)
			st, code := deniedCode(t, resp, tc.c.key)
			if st != tc.status || code != tc.code {
				t.Fatalf("denied %d %s, want %d %s", st, code, tc.status, tc.code)
			}
			if resp.GetStatus().GetCode() != int32(extauthz.CodeOf(st)) {
				t.Errorf("check status %v for HTTP %d", resp.GetStatus(), st)
			}
			hs := headerMap(resp.GetDeniedResponse().GetHeaders())
			if tc.header != "" && hs[tc.header] == "" {
				t.Errorf("denial lacks %s: %v", tc.header, hs)
			}
			if hs["x-meterr-key-id"] != "" {
				t.Errorf("denial carries identity headers: %v", hs)
			}
			// The HTTP answer to the same request: same status, body
			// and headers. (The rate-limit case spent its request
			// above; HTTP sees the same window.)
			w := g.do(tc.http)
			// The messages of invalid_request name the parameter.
			if w.Code != st || code != "invalid_request" && w.Body.String() != resp.GetDeniedResponse().GetBody() {
				t.Errorf("HTTP answers %d %s; gRPC %d %s", w.Code, w.Body, st, resp.GetDeniedResponse().GetBody())
			}
			wh := w.Header().Clone()
			if code == "insufficient_permissions" {
				// Counted: HTTP's request is the next one.
				hs["x-ratelimit-remaining"], hs["ratelimit"] = wh.Get("X-Ratelimit-Remaining"), wh.Get("Ratelimit")
				if wh.Get("X-Ratelimit-Remaining") != "998" {
					t.Errorf("HTTP after gRPC: remaining %s, want 998", wh.Get("X-Ratelimit-Remaining"))
				}
			}
			if got, want := headerList(hs), httpHeaderList(wh); got != want {
				t.Errorf("gRPC headers\n%s\nHTTP headers\n%s", got, want)
			}
		})
	}
}

func headerList(hs map[string]string) string {
	var l []string
	for k, v := range hs {
		l = append(l, k+": "+v)
	}
	sort.Strings(l)
	return strings.Join(l, "\n")
}

func httpHeaderList(h http.Header) string {
	m := map[string]string{}
	for k, v := range h {
		m[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return headerList(m)
}

func TestGRPCRoutes(t *testing.T) {
	g := newGRPCFixture(t, func(c *ServerConfig) {
		c.Routes = []Route{{Method: "*", Prefix: "/v1/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}, {Method: "*", Prefix: "/v1/admin", Permission: "admin"}}
	})
	readOnly := standard()
	readOnly.Permissions = []string{"read"}
	ro := g.add("ro", readOnly)
	for _, tc := range []struct {
		method, path string
		ext          map[string]string
		want         string // "" allowed
	}{
		{"GET", "/v1/usage?x=1", nil, ""},
		{"POST", "/v1/usage", nil, "insufficient_permissions"},
		{"post", "/v1/usage", nil, "insufficient_permissions"},
		{"POST", "/v1//usage", nil, "insufficient_permissions"},
		{"POST", "/v1/%75sage", nil, "insufficient_permissions"},
		{"HEAD", "/v1/admin/x", nil, "insufficient_permissions"},
		{"GET", "/v1/admin", map[string]string{extauthz.PermissionExtension: "read"}, ""}, // the extension wins
		{"GET", "/v1/usage", map[string]string{extauthz.PermissionExtension: "read,write"}, "insufficient_permissions"},
		{"GET", "", nil, "invalid_request"},
		{"GET", "v1/usage", nil, "invalid_request"},
	} {
		c := checkReq{key: ro, method: tc.method, path: tc.path, ext: tc.ext}
		req := c.build()
		req.Attributes.Request.Http.Path = tc.path // "" too
		resp := g.checkRaw(t, req)
		if tc.want == "" {
			if resp.GetStatus().GetCode() != 0 {
				t.Errorf("%s %s: %v", tc.method, tc.path, resp.GetDeniedResponse().GetBody())
			}
			continue
		}
		if _, code := deniedCode(t, resp, ro); code != tc.want {
			t.Errorf("%s %s %v: %s, want %s", tc.method, tc.path, tc.ext, code, tc.want)
		}
	}
}

// Malformed or incomplete requests are denied, never answered with a gRPC
// error; only a request over the size bound is refused by gRPC itself.
func TestGRPCBadInput(t *testing.T) {
	g := newGRPCFixture(t, nil)
	key := g.add("web", standard())
	for name, req := range map[string]*authv3.CheckRequest{
		"empty":         {},
		"no request":    {Attributes: &authv3.AttributeContext{}},
		"no http":       {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}},
		"no headers":    {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/"}}}},
		"two keys":      checkReq{headers: map[string]string{"authorization": "Bearer " + key + ",Bearer " + key}}.build(),
		"key in query":  checkReq{path: "/v1/usage?api_key=" + key}.build(),
		"basic scheme":  checkReq{headers: map[string]string{"authorization": "Basic " + key}}.build(),
		"pipe source":   {Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/x"}}}}}},
		"other ext":     checkReq{ext: map[string]string{"other": "x"}}.build(),
		"no source key": checkReq{source: "not an address"}.build(),
	} {
		resp := g.checkRaw(t, req)
		if st, code := deniedCode(t, resp, key); st != 401 || code != "invalid_api_key" {
			t.Errorf("%s: %d %s", name, st, code)
		}
	}
	// header_map (Envoy's encode_raw_headers) works as headers does.
	req := checkReq{}.build()
	req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "Authorization", RawValue: []byte("Bearer " + key)}}}
	if resp := g.checkRaw(t, req); resp.GetStatus().GetCode() != 0 {
		t.Errorf("header_map: %v", resp.GetDeniedResponse().GetBody())
	}
	// Headers beyond --max-header-bytes plus headroom: gRPC refuses the
	// message before it is decoded.
	huge := checkReq{key: key, headers: map[string]string{"x-big": strings.Repeat("a", DefaultMaxHeaderBytes+grpcHeadroom)}}.build()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := g.client.Check(ctx, huge); status.Code(err) != grpccodes.ResourceExhausted {
		t.Errorf("huge request: %v, want ResourceExhausted", err)
	}
	// The connection still serves.
	if resp := g.check(t, checkReq{key: key}); resp.GetStatus().GetCode() != 0 {
		t.Errorf("after the huge request: %v", resp)
	}
}

func TestGRPCHealth(t *testing.T) {
	g := newGRPCFixture(t, nil)
	hc := healthpb.NewHealthClient(g.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := func(st healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", authorizationService} {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.GetStatus() != st {
				t.Errorf("health %q: %v %v, want %v", svc, resp.GetStatus(), err, st)
			}
		}
	}
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	setHealth(g.health, true)
	want(healthpb.HealthCheckResponse_SERVING)
	setHealth(g.health, false)
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "other"}); status.Code(err) != grpccodes.NotFound {
		t.Errorf("unknown service: %v", err)
	}
}

// Before the first full load a check is denied 503 not_ready with
// Retry-After, as on HTTP.
func TestGRPCNotLoaded(t *testing.T) {
	s, err := NewServer(ServerConfig{Index: index.New()})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.extAuthz.Check(context.Background(), checkReq{key: newKey(t, "production")}.build())
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDeniedResponse()
	if d.GetStatus().GetCode() != 503 || headerMap(d.GetHeaders())["retry-after"] != "1" || !strings.Contains(d.GetBody(), "not_ready") {
		t.Fatalf("not loaded: %v", resp)
	}
}

// run serves gRPC on --grpc-listen: health follows readiness, a key
// record's key is allowed, and cancelling stops the gRPC server too.
func TestRunGRPC(t *testing.T) {
	const ns = "meterr-system"
	key := newKey(t, "production")
	cs := fake.NewClientset(recordSecret(t, ns, newRecord("web", standard(), key)))
	ln, gln := listen(t), listen(t)
	o := DefaultOptions()
	o.MetricsAddr = "0"
	o.GRPCListen = gln.Addr().String()
	o.ShutdownTimeout = 5 * time.Second
	o.Clock = clocktesting.NewFakeClock(t0)
	keys := []string{key}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, o, testLogger(t, &keys), runDeps{secrets: fakeSecrets(cs, ns), listener: ln, grpcListener: gln})
	}()
	conn, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	hc := healthpb.NewHealthClient(conn)
	eventually(t, "gRPC health SERVING", func() bool {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: authorizationService})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), checkReq{key: key}.build())
	if err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("Check: %v %v", resp, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", gln.Addr().String(), time.Second); err == nil {
		_ = c.Close()
		t.Fatal("gRPC still listening after shutdown")
	}
}

func TestGRPCListenValidation(t *testing.T) {
	o := DefaultOptions()
	o.GRPCListen = o.Listen
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--grpc-listen") {
		t.Fatalf("grpc on the API address: %v", err)
	}
	o.GRPCListen = "nope"
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--grpc-listen") {
		t.Fatalf("bad grpc address: %v", err)
	}
	o.GRPCListen = ":9001"
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
}

// --log-decisions covers gRPC checks: one line per refusal with the
// endpoint "grpc", the key's id and owner, the addresses and the original
// request; never the key.
func TestGRPCDecisionLog(t *testing.T) {
	var mu sync.Mutex // the server logs on its own goroutines
	var lines []string
	log := funcr.New(func(prefix, args string) { mu.Lock(); lines = append(lines, prefix+" "+args); mu.Unlock() }, funcr.Options{})
	g := newGRPCFixture(t, func(c *ServerConfig) {
		c.LogDecisions = LogDecisionsDenied
		c.Log = log
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), loopbackGateway}
		c.Routes = []Route{{Method: "*", Prefix: "/v1/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}}
	})
	readOnly := standard()
	readOnly.Permissions = []string{"read"}
	ro := g.add("ro", readOnly)
	off := standard()
	off.Disabled = true
	disabled := g.add("off", off)
	unknown := newKey(t, "production")
	g.check(t, checkReq{key: ro}) // allowed: not logged
	g.check(t, checkReq{key: ro, method: "POST", path: "/v1/usage?key=" + ro, source: "10.1.1.1",
		headers: map[string]string{"x-forwarded-for": "203.0.113.9", "origin": "https://app.example.com"}})
	g.check(t, checkReq{key: unknown})
	g.check(t, checkReq{key: disabled})
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3: %q", len(lines), lines)
	}
	// A disabled key is named, as in the HTTP line: its answer is an
	// unknown key's, its log line is the operator's.
	if l := lines[2]; !strings.Contains(l, `"code"="invalid_api_key"`) || !strings.Contains(l, `"keyId"="`+apikey.HashOf(disabled).ID()+`"`) ||
		!strings.Contains(l, `"owner"="team-a/off"`) {
		t.Errorf("disabled key line: %s", l)
	}
	for _, want := range []string{`"code"="insufficient_permissions"`, `"keyId"="` + apikey.HashOf(ro).ID() + `"`, `"owner"="team-a/ro"`,
		`"client"="203.0.113.9"`, `"peer"="127.0.0.1"`, `"source"="10.1.1.1"`, `"xForwardedFor"="203.0.113.9"`, `"originHost"="app.example.com"`,
		`"endpoint"="grpc"`, `"method"="POST"`, `"path"="/v1/usage"`, `"required"="write"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line lacks %s: %s", want, lines[0])
		}
	}
	if !strings.Contains(lines[1], `"code"="invalid_api_key"`) || strings.Contains(lines[1], "keyId") {
		t.Errorf("unknown key line: %s", lines[1])
	}
	for _, l := range lines {
		for _, k := range []string{ro, unknown, disabled} {
			if strings.Contains(l, k) || strings.Contains(l, k[len("mtr_live_"):]) {
				t.Errorf("a decision log line holds a key: %s", l)
			}
		}
	}
}

// Any CheckRequest gets a CheckResponse with one of the answers' statuses,
// never a panic, and never echoes the key.
func FuzzCheckRequest(f *testing.F) {
	fx := newFixture(f, func(c *ServerConfig) {
		c.Routes = []Route{{Method: "*", Prefix: "/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}}
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	key := fx.add("web", standard())
	f.Add("Bearer "+key, "GET", "/v1/usage", "10.1.1.1", "203.0.113.9", "https://a.example.com", "write", true)
	f.Add("Bearer "+key, "HEAD", "/v1/%2e%2e/usage;x", "::ffff:10.1.1.1", "garbage", "null", "", false)
	f.Add("bearer  x", "", "", "", "", "", "read,,write", true)
	gateway := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 9, 9, 9), Port: 4000}})
	f.Fuzz(func(t *testing.T, auth, method, path, source, xff, origin, ext string, withExt bool) {
		c := checkReq{method: method, path: path, source: source,
			headers: map[string]string{"authorization": auth, "x-forwarded-for": xff, "origin": origin}}
		if withExt {
			c.ext = map[string]string{extauthz.PermissionExtension: ext}
		}
		req := c.build()
		req.Attributes.Request.Http.Method, req.Attributes.Request.Http.Path = method, path
		// From a trusted gateway, so the claimed addresses are read too.
		d, body := fx.srv.decideCheckRequest(gateway, req, t0)
		resp := fx.srv.checkResponse(&d, body)
		switch st := d.Code.Status(); st {
		case 200, 400, 401, 403, 429, 503:
		default:
			t.Fatalf("status %d", st)
		}
		if (resp.GetStatus().GetCode() == 0) != d.Allowed() {
			t.Fatalf("check status %v for %s", resp.GetStatus(), d.Code)
		}
		if strings.Contains(resp.String(), key) {
			t.Fatal("the answer echoes the key")
		}
		// gRPC must be able to send it (strings must be valid UTF-8).
		if _, err := proto.Marshal(resp); err != nil {
			t.Fatalf("the answer cannot be marshalled: %v", err)
		}
	})
}

// unreachableLimiter is a shared limiter failing closed: nothing can be
// counted.
type unreachableLimiter struct{}

func (unreachableLimiter) Take(context.Context, quota.ID, quota.Limit, time.Time) (int64, time.Time, bool) {
	return 0, time.Time{}, false
}
func (unreachableLimiter) Peek(context.Context, quota.ID, quota.Limit, time.Time) (int64, time.Time) {
	return 0, time.Time{}
}
func (unreachableLimiter) Forget(string) {}

// With the limit uncountable, gRPC, HTTP and NGINX mode all answer 503
// rate_limit_unavailable with Retry-After: 1.
func TestGRPCRateLimitUnavailable(t *testing.T) {
	g := newGRPCFixture(t, func(c *ServerConfig) { c.Limiter = unreachableLimiter{} })
	key := g.add("web", standard())
	resp := g.check(t, checkReq{key: key})
	st, code := deniedCode(t, resp, key)
	hs := headerMap(resp.GetDeniedResponse().GetHeaders())
	if st != 503 || code != "rate_limit_unavailable" || hs["retry-after"] != "1" || hs["x-ratelimit-limit"] != "1000" ||
		resp.GetStatus().GetCode() != int32(grpccodes.Unavailable) {
		t.Fatalf("gRPC: %d %s %v %v", st, code, hs, resp.GetStatus())
	}
	w := g.do(req{key: key, target: request.CheckPath})
	if w.Code != st || w.Body.String() != resp.GetDeniedResponse().GetBody() || httpHeaderList(w.Header()) != headerList(hs) {
		t.Errorf("HTTP %d %s %v; gRPC %d %v", w.Code, w.Body, w.Header(), st, hs)
	}
	w = g.do(req{key: key, target: request.CheckPath + "?mode=nginx"})
	if w.Code != 403 || w.Header().Get("X-Meterr-Status") != "503" || w.Header().Get("X-Meterr-Error-Code") != "rate_limit_unavailable" ||
		w.Header().Get("Retry-After") != "1" {
		t.Errorf("NGINX mode: %d %v", w.Code, w.Header())
	}
	// Unlimited keys never depend on the limiter.
	unl := standard()
	unl.RequestsPerHour = 0
	if resp := g.check(t, checkReq{key: g.add("unlimited", unl)}); resp.GetStatus().GetCode() != 0 {
		t.Errorf("unlimited key: %v", resp.GetDeniedResponse().GetBody())
	}
}
