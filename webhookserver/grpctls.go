package webhookserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// clientCAs is the --grpc-client-ca bundle. It is read again when the file
// changes (cert-manager renewing a CA, the kubelet swapping a mounted
// Secret's ..data link): checked at each TLS handshake, which on gRPC's
// long-lived connections is rare, so a stat there costs nothing that matters
// and needs no watcher to go stale. A bundle that does not load keeps the
// previous one.
type clientCAs struct {
	path string
	log  logr.Logger

	mu    sync.Mutex
	stamp fileStamp
	pool  *x509.CertPool
	// base is the handshake configuration without ClientCAs (set by
	// grpcTLSConfig); config is base with the bundle last read.
	base, config *tls.Config
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{mod: fi.ModTime(), size: fi.Size()} }

// newClientCAs reads the bundle at path; an unreadable file or one without a
// PEM certificate is an error naming the file.
func newClientCAs(path string, log logr.Logger) (*clientCAs, error) {
	c := &clientCAs{path: path, log: log}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--grpc-client-ca: %w", err)
	}
	pool, err := readCAPool(path)
	if err != nil {
		return nil, err
	}
	c.stamp, c.pool = stampOf(fi), pool
	return c, nil
}

func readCAPool(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path) //nolint:gosec // the operator names the file (--grpc-client-ca)
	if err != nil {
		return nil, fmt.Errorf("--grpc-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--grpc-client-ca: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// current returns the handshake configuration with the bundle as it is in
// the file now.
func (c *clientCAs) current() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	// A file gone for a moment (a Secret being swapped) keeps the bundle
	// last read.
	if err == nil && stampOf(fi) != c.stamp {
		// Not again until the file changes once more, loaded or not.
		c.stamp = stampOf(fi)
		if pool, err := readCAPool(c.path); err != nil {
			c.log.Error(err, "keeping the client CA bundle last read")
		} else {
			c.pool, c.config = pool, nil
			c.log.Info("client CA bundle reloaded", "file", c.path)
		}
	}
	if c.config == nil {
		c.config = c.base.Clone()
		c.config.ClientCAs = c.pool
	}
	return c.config
}

// grpcTLSConfig returns the gRPC listener's TLS configuration: the auth
// API's certificate (base), and when cas is set, a client certificate
// required and verified against the bundle, for client authentication, and,
// when sans is not empty, naming one of sans as a DNS or URI SAN. Every
// caller that completes the handshake is then a gateway vouched for (see
// extauthz.Server.Caller); any other is refused before its first call.
func grpcTLSConfig(base *tls.Config, cas *clientCAs, sans []string) *tls.Config {
	if cas == nil {
		return base
	}
	hs := base.Clone()
	hs.ClientAuth = tls.RequireAndVerifyClientCert
	// gRPC needs HTTP/2 by ALPN; credentials.NewTLS adds it to the outer
	// configuration only, not to one returned by GetConfigForClient.
	hs.NextProtos = []string{"h2"}
	if len(sans) > 0 {
		hs.VerifyConnection = func(cs tls.ConnectionState) error { return verifyClientSAN(cs, sans) }
	}
	cas.mu.Lock()
	cas.base, cas.config = hs, nil
	cas.mu.Unlock()

	outer := base.Clone()
	outer.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return cas.current(), nil }
	return outer
}

// errClientSAN refuses a verified certificate that names none of the
// --grpc-client-san identities.
var errClientSAN = errors.New("the client certificate names none of the identities in --grpc-client-san")

// verifyClientSAN accepts a connection whose verified client certificate
// carries one of sans as a DNS name or a URI (a SPIFFE ID), compared
// exactly.
func verifyClientSAN(cs tls.ConnectionState, sans []string) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errClientSAN
	}
	leaf := cs.VerifiedChains[0][0]
	for _, n := range leaf.DNSNames {
		if slices.Contains(sans, n) {
			return nil
		}
	}
	for _, u := range leaf.URIs {
		if slices.Contains(sans, u.String()) {
			return nil
		}
	}
	return errClientSAN
}
