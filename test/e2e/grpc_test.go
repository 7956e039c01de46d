package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// pki is a CA that issues the test's server and client certificates.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(name string) *pki {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	c, err := x509.ParseCertificate(der)
	Expect(err).NotTo(HaveOccurred())
	return &pki{cert: c, key: key}
}

// issue returns a certificate for usage, for the loopback address, naming
// dns; with dir it also writes tls.crt and tls.key there.
func (p *pki) issue(usage x509.ExtKeyUsage, dns, dir string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dns},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{dns}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	Expect(err).NotTo(HaveOccurred())
	if dir != "" {
		kder, err := x509.MarshalECPrivateKey(key)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.MkdirAll(dir, 0o700)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)).To(Succeed())
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *pki) writeCA(path string) {
	Expect(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cert.Raw}), 0o600)).To(Succeed())
}

// checkFrom is Envoy's ext_authz Check of a GET /v1/usage with key, as a
// gateway that says the client is source.
func checkFrom(conn *grpc.ClientConn, key, source string) (*authv3.CheckResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/usage", Host: "api.example.com",
			Headers: map[string]string{"authorization": "Bearer " + key, "x-forwarded-for": source}}},
	}})
}

// The gRPC path as gateways call it: a plain listener, where a caller's
// claimed address is ignored (any pod can reach it), and a listener with
// --grpc-client-ca, where only gateways with a verified certificate connect
// and their claims count. Each is its own auth server process.
var _ = Describe("Envoy ext_authz over gRPC, with and without client certificates", Ordered, func() {
	var (
		plain, mtls      *proc
		plainGRPC, mGRPC string
		serverRoots      *x509.CertPool
		gateway, rogue   tls.Certificate
		key              string
	)

	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns))
		dir := filepath.Join(workDir, "grpc-pki")
		ca, otherCA := newPKI("meterr e2e gateways"), newPKI("some tenant's CA")
		ca.issue(x509.ExtKeyUsageServerAuth, "meterr-auth-server.meterr-system.svc", filepath.Join(dir, "server"))
		serverRoots = x509.NewCertPool()
		serverRoots.AddCert(ca.cert)
		ca.writeCA(filepath.Join(dir, "client-ca.crt"))
		gateway = ca.issue(x509.ExtKeyUsageClientAuth, "envoy.gateways.svc", "")
		rogue = otherCA.issue(x509.ExtKeyUsageClientAuth, "envoy.gateways.svc", "")

		plainGRPC, mGRPC = freeAddr(), freeAddr()
		plain = startProc("auth-server-grpc", "auth-server", "--kubeconfig", authKC,
			"--listen", freeAddr(), "--metrics-bind-address", "0", "--grpc-listen", plainGRPC, "--log-decisions=denied")
		mtls = startProc("auth-server-grpc-mtls", "auth-server", "--kubeconfig", authKC,
			"--listen", freeAddr(), "--metrics-bind-address", "0", "--grpc-listen", mGRPC,
			"--tls-cert-file", filepath.Join(dir, "server", "tls.crt"), "--tls-key-file", filepath.Join(dir, "server", "tls.key"),
			"--grpc-client-ca", filepath.Join(dir, "client-ca.crt"), "--grpc-client-san", "envoy.gateways.svc")
		DeferCleanup(func() {
			plain.stop()
			mtls.stop()
		})

		apply(keyManifest("grpc-ip", `  restrictions:
    ipAllowlist: [203.0.113.0/24]
  rateLimit:
    requestsPerHour: 3
`))
		waitReady("grpc-ip")
		key = secretKey("grpc-ip")
	})

	dial := func(addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		return conn
	}
	mtlsCreds := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: serverRoots, Certificates: certs, ServerName: "meterr-auth-server.meterr-system.svc",
			MinVersion: tls.VersionTLS12})
	}
	serving := func(conn *grpc.ClientConn) func() healthpb.HealthCheckResponse_ServingStatus {
		return func() healthpb.HealthCheckResponse_ServingStatus {
			resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil {
				return healthpb.HealthCheckResponse_UNKNOWN
			}
			return resp.GetStatus()
		}
	}

	It("ignores the address a caller without trust claims: the key is refused as from the caller itself", func() {
		conn := dial(plainGRPC, insecure.NewCredentials())
		Eventually(serving(conn)).WithTimeout(30 * time.Second).Should(Equal(healthpb.HealthCheckResponse_SERVING))
		Eventually(func() int32 {
			resp, err := checkFrom(conn, key, "203.0.113.7")
			if err != nil {
				return -1
			}
			return resp.GetStatus().GetCode()
		}).WithTimeout(10 * time.Second).Should(Equal(int32(grpccodes.PermissionDenied)))
		for range 4 {
			resp, err := checkFrom(conn, key, "203.0.113.7")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.GetDeniedResponse().GetBody()).To(And(ContainSubstring(`"ip_not_allowed"`), ContainSubstring("127.0.0.1")))
			Expect(resp.GetDeniedResponse().GetBody()).NotTo(ContainSubstring(key))
		}
		// The decision log names both: the connection's peer, and the
		// source it claimed.
		Eventually(plain.logs).Should(And(ContainSubstring(`"peer":"127.0.0.1"`), ContainSubstring(`"source":"203.0.113.7"`)))
		Expect(plain.logs()).NotTo(ContainSubstring(key))
	})

	It("connects only gateways with a certificate verified against --grpc-client-ca, and believes their claims", func() {
		conn := dial(mGRPC, mtlsCreds(gateway))
		Eventually(serving(conn)).WithTimeout(30 * time.Second).Should(Equal(healthpb.HealthCheckResponse_SERVING))
		Eventually(func() bool {
			resp, err := checkFrom(conn, key, "203.0.113.7")
			return err == nil && resp.GetOkResponse() != nil
		}).WithTimeout(10 * time.Second).Should(BeTrue())
		// Counted as the owner's own requests: the limit of 3 holds.
		resp, err := checkFrom(conn, key, "203.0.113.7")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.GetOkResponse()).NotTo(BeNil())
		resp, err = checkFrom(conn, key, "203.0.113.7")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.GetOkResponse()).NotTo(BeNil())
		resp, err = checkFrom(conn, key, "203.0.113.7")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.GetStatus().GetCode()).To(Equal(int32(grpccodes.ResourceExhausted)))

		for what, creds := range map[string]credentials.TransportCredentials{
			"no client certificate":     mtlsCreds(),
			"another CA's":              mtlsCreds(rogue),
			"plain text, no TLS at all": insecure.NewCredentials(),
		} {
			_, err := checkFrom(dial(mGRPC, creds), key, "203.0.113.7")
			Expect(err).To(HaveOccurred(), what)
		}
		Expect(mtls.logs()).NotTo(ContainSubstring(key))
	})
})
