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
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial number, and returns it.
func writeCert(t *testing.T, dir string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "meterr-auth"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// A rotated certificate is served without a restart, from the first
// handshake after the files change; a pair that does not load keeps the
// previous one.
func TestRunTLSReload(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	ln := listen(t)
	o := DefaultOptions()
	o.MetricsAddr = "0"
	o.TLSCertFile, o.TLSKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs logLines
	var keys []string
	go func() {
		done <- run(ctx, o, logs.logger(t, &keys), runDeps{secrets: fakeSecrets(fake.NewClientset(), o.RecordsNamespace), listener: ln})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	serial := func() int64 {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificate
			DisableKeepAlives: true,
		}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz over TLS: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	// Each handshake checks the files, so the first one after a write
	// serves it; the loop allows for a file system's coarse timestamps.
	waitSerial := func(want int64, what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			s := serial()
			if s == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: serving serial %d, want %d", what, s, want)
			}
		}
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d", s)
	}
	writeCert(t, dir, 2)
	waitSerial(2, "rotated certificate")

	// A broken pair keeps the previous certificate; the next good one is
	// served.
	if err := os.WriteFile(o.TLSKeyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(logs.with("keeping the TLS certificate last read")) == 0; time.Sleep(20 * time.Millisecond) {
		if s := serial(); s != 2 {
			t.Fatalf("broken pair: serial %d", s)
		}
		if time.Now().After(deadline) {
			t.Fatal("the broken pair was not read")
		}
	}
	if s := serial(); s != 2 {
		t.Fatalf("broken pair: serial %d", s)
	}
	writeCert(t, dir, 3)
	waitSerial(3, "certificate after a broken pair")
}
