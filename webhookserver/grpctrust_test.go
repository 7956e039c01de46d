package webhookserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// The attack of issue 21: a stolen key allowlisted to 203.0.113.0/24 with a
// limit of 3 an hour, used over gRPC by a pod that claims to be 203.0.113.7.
// Nothing vouches for the caller (loopback is in no --trusted-proxies, no
// client certificate), so its claims are ignored: every call is refused as
// coming from the caller's own address, none is counted, and the owner's own
// request from 203.0.113.7 still has its whole hour.
func TestGRPCClaimsFromAnUntrustedPeerAreIgnored(t *testing.T) {
	g := newGRPCFixture(t, func(c *ServerConfig) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	pol := standard()
	pol.IPAllowlist = []string{"203.0.113.0/24"}
	pol.RequestsPerHour = 3
	key := g.add("owner", pol)
	for _, c := range []checkReq{
		{key: key, source: "203.0.113.7"},
		{key: key, source: "203.0.113.7", headers: map[string]string{"x-forwarded-for": "203.0.113.7"}},
		// A claimed trusted proxy does not make its XFF believed either.
		{key: key, source: "10.1.1.1", headers: map[string]string{"x-forwarded-for": "203.0.113.7"}},
		{key: key, source: "203.0.113.7"},
	} {
		st, code := deniedCode(t, g.check(t, c), key)
		if st != 403 || code != "ip_not_allowed" {
			t.Fatalf("spoofed source %s: %d %s, want 403 ip_not_allowed", c.source, st, code)
		}
	}
	w := g.do(req{key: key, remote: "203.0.113.7:40000"})
	if w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != "2" {
		t.Fatalf("the owner after the spoofed calls: %d, remaining %q, want 200 and 2 (nothing counted)",
			w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
}

// A peer inside --trusted-proxies may state the client: its
// attributes.source.address is the client, and X-Forwarded-For is walked
// when that address is a trusted proxy itself, as on HTTP.
func TestGRPCClaimsFromATrustedPeer(t *testing.T) {
	g := newGRPCFixture(t, func(c *ServerConfig) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	pol := standard()
	pol.IPAllowlist = []string{"203.0.113.0/24"}
	pol.RequestsPerHour = 3
	key := g.add("owner", pol)
	if resp := g.check(t, checkReq{key: key, source: "203.0.113.7"}); resp.GetOkResponse() == nil {
		t.Fatalf("trusted peer stating 203.0.113.7: %v", resp.GetDeniedResponse().GetBody())
	}
	if resp := g.check(t, checkReq{key: key, source: "10.1.1.1", headers: map[string]string{"x-forwarded-for": "203.0.113.9"}}); resp.GetOkResponse() == nil {
		t.Fatalf("trusted peer, source a trusted proxy, XFF 203.0.113.9: %v", resp.GetDeniedResponse().GetBody())
	}
	st, code := deniedCode(t, g.check(t, checkReq{key: key, source: "192.0.2.1", headers: map[string]string{"x-forwarded-for": "203.0.113.9"}}), key)
	if st != 403 || code != "ip_not_allowed" {
		t.Fatalf("trusted peer, source an untrusted 192.0.2.1 with a forged XFF: %d %s", st, code)
	}
}

// grpcCaller reads the connection's peer from the call's context: its
// address, vouched for (with the one trust rule) by --trusted-proxies or by
// a verified client certificate; a certificate the TLS stack did not verify
// vouches for nothing.
func TestGRPCCaller(t *testing.T) {
	s, err := NewServer(ServerConfig{Index: index.New(), TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	tcp := func(ip string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(ip)) }
	leaf := &x509.Certificate{}
	for _, tc := range []struct {
		name    string
		p       *peer.Peer
		want    string
		vouched bool
	}{
		{"no peer", nil, "", false},
		{"untrusted", &peer.Peer{Addr: tcp("192.0.2.1:4000")}, "192.0.2.1", false},
		{"trusted", &peer.Peer{Addr: tcp("10.1.1.1:4000")}, "10.1.1.1", true},
		{"mapped v4", &peer.Peer{Addr: tcp("[::ffff:10.1.1.1]:4000")}, "10.1.1.1", true},
		{"unix socket", &peer.Peer{Addr: &net.UnixAddr{Name: "/x", Net: "unix"}}, "", false},
		{"verified certificate", &peer.Peer{Addr: tcp("192.0.2.1:4000"), AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}}}, "192.0.2.1", true},
		{"unverified certificate", &peer.Peer{Addr: tcp("192.0.2.1:4000"), AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}}}, "192.0.2.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.p != nil {
				ctx = peer.NewContext(ctx, tc.p)
			}
			got, certified := s.grpcCaller(ctx)
			// Vouched for: by the one trust rule, the address the peer
			// claims counts (a trusted address vouches by itself, a
			// verified certificate through Caller).
			claimed := netip.MustParseAddr("203.0.113.9")
			vouched := s.client(&request.Request{Peer: got, Vouched: certified, Claimed: claimed}) == claimed
			if (tc.want == "") != !got.IsValid() || got.IsValid() && got.String() != tc.want || vouched != tc.vouched {
				t.Fatalf("caller %v vouched %v, want %q %v", got, vouched, tc.want, tc.vouched)
			}
		})
	}
}

// testCA issues certificates for the mTLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// issue returns a client certificate with the given SANs ("spiffe://..."
// is a URI SAN, anything else a DNS name).
func (ca *testCA) issue(t *testing.T, usage x509.ExtKeyUsage, sans ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, s := range sans {
		if u, err := url.Parse(s); err == nil && u.Scheme == "spiffe" {
			tmpl.URIs = append(tmpl.URIs, u)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// gRPC with --grpc-client-ca: only callers with a certificate verified
// against the bundle (and, with --grpc-client-san, naming one of those
// identities) get a connection at all, and such a caller's claimed client
// address counts. The bundle is re-read when the file changes.
func TestRunGRPCClientCA(t *testing.T) {
	const ns = "meterr-system"
	pol := standard()
	pol.IPAllowlist = []string{"203.0.113.0/24"}
	key := newKey(t, "production")
	cs := fake.NewClientset(recordSecret(t, ns, newRecord("web", pol, key)))
	dir := t.TempDir()
	serverCert := writeCert(t, dir, 1)
	gateways, other := newTestCA(t, "gateways"), newTestCA(t, "other")
	caFile := filepath.Join(dir, "client-ca.crt")
	if err := os.WriteFile(caFile, gateways.pem(), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, gln := listen(t), listen(t)
	o := DefaultOptions()
	o.MetricsAddr = "0"
	o.GRPCListen = gln.Addr().String()
	o.TLSCertFile, o.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	o.GRPCClientCA = caFile
	o.GRPCClientSANs = []string{"envoy.gateways.svc", "spiffe://cluster.local/ns/gw/sa/envoy"}
	o.ShutdownTimeout = 5 * time.Second
	o.Clock = clocktesting.NewFakeClock(t0)
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	keys := []string{key}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, o, testLogger(t, &keys), runDeps{secrets: fakeSecrets(cs, ns), listener: ln, grpcListener: gln})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(serverCert)
	check := func(certs ...tls.Certificate) (*authv3.CheckResponse, error) {
		t.Helper()
		conn, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12})))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		return authv3.NewAuthorizationClient(conn).Check(cctx, checkReq{key: key, source: "203.0.113.7"}.build())
	}
	envoy := gateways.issue(t, x509.ExtKeyUsageClientAuth, "envoy.gateways.svc")
	eventually(t, "a gateway's verified claim is believed", func() bool {
		resp, err := check(envoy)
		return err == nil && resp.GetOkResponse() != nil
	})
	if resp, err := check(gateways.issue(t, x509.ExtKeyUsageClientAuth, "spiffe://cluster.local/ns/gw/sa/envoy")); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("a SPIFFE identity in --grpc-client-san: %v %v", resp, err)
	}
	for name, certs := range map[string][]tls.Certificate{
		"no client certificate":           nil,
		"another CA":                      {other.issue(t, x509.ExtKeyUsageClientAuth, "envoy.gateways.svc")},
		"a name not in --grpc-client-san": {gateways.issue(t, x509.ExtKeyUsageClientAuth, "attacker.tenant.svc")},
		"a server-only certificate":       {gateways.issue(t, x509.ExtKeyUsageServerAuth, "envoy.gateways.svc")},
	} {
		if resp, err := check(certs...); err == nil {
			t.Errorf("%s: connected and answered %v, want the handshake refused", name, resp.GetStatus())
		}
	}
	// A new bundle is read without a restart.
	if err := os.WriteFile(caFile, other.pem(), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new client CA bundle is used", func() bool {
		resp, err := check(other.issue(t, x509.ExtKeyUsageClientAuth, "envoy.gateways.svc"))
		return err == nil && resp.GetOkResponse() != nil
	})
	if _, err := check(envoy); err == nil {
		t.Error("a certificate of the replaced CA still connects")
	}
}

func TestGRPCClientCAValidation(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	good := DefaultOptions()
	good.GRPCListen = ":9001"
	good.TLSCertFile, good.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	good.GRPCClientCA = filepath.Join(dir, "tls.crt")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Options)
		want string
	}{
		"no TLS":     {func(o *Options) { o.TLSCertFile, o.TLSKeyFile = "", "" }, "--grpc-client-ca: needs --tls-cert-file"},
		"no gRPC":    {func(o *Options) { o.GRPCListen = "" }, "--grpc-client-ca: needs --grpc-listen"},
		"SAN, no CA": {func(o *Options) { o.GRPCClientCA = "" }, "--grpc-client-san: needs --grpc-client-ca"},
		"empty SAN":  {func(o *Options) { o.GRPCClientSANs = []string{""} }, "--grpc-client-san"},
		"SAN with *": {func(o *Options) { o.GRPCClientSANs = []string{"*.gw.svc"} }, "--grpc-client-san"},
	} {
		t.Run(name, func(t *testing.T) {
			o := good
			o.GRPCClientSANs = []string{"envoy.gw.svc"}
			tc.mut(&o)
			if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want an error naming %q", err, tc.want)
			}
		})
	}
	// A bundle that holds no certificate is refused at start, naming the file.
	bad := filepath.Join(dir, "empty.crt")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newClientCAs(bad, logr.Discard()); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("empty bundle: %v", err)
	}
}
