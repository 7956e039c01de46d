package webhookserver

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"

	"github.com/go-logr/logr"
)

// servingCert is the certificate in a pair of files (--tls-cert-file,
// --tls-key-file), read again when either file changes (cert-manager
// renewing a mounted Secret, the kubelet swapping its ..data link), so a
// renewal needs no restart. Like the gRPC client CA bundle (grpctls.go), the
// files are checked at each TLS handshake: a stat of each costs little beside
// a handshake, and nothing runs between handshakes. A pair that does not load
// (half-written, or a key that does not match) is logged and the previous
// certificate kept, until the files change again.
//
// It replaces controller-runtime's certwatcher, which did the same from file
// events and a 10 s re-read, but links controller-runtime's metrics and,
// through them, client-go's leader election, every built-in API group and
// the scheme of all of them, built at start-up: about 10 MiB of the auth
// server's resident memory (docs/architecture.md, "Memory of the auth
// server").
type servingCert struct {
	certFile, keyFile string
	log               logr.Logger

	mu     sync.Mutex
	stamps [2]fileStamp
	cert   *tls.Certificate
}

// newServingCert loads the pair; one that does not load is an error.
func newServingCert(certFile, keyFile string, log logr.Logger) (*servingCert, error) {
	c := &servingCert{certFile: certFile, keyFile: keyFile, log: log}
	stamps, err := c.stat()
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	c.stamps, c.cert = stamps, &cert
	return c, nil
}

func (c *servingCert) stat() ([2]fileStamp, error) {
	var s [2]fileStamp
	for i, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return s, err
		}
		s[i] = stampOf(fi)
	}
	return s, nil
}

// GetCertificate is tls.Config.GetCertificate: the pair as it is in the
// files now, or the last one that loaded.
func (c *servingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A file gone for a moment (a Secret being swapped) keeps the pair
	// last read.
	if stamps, err := c.stat(); err == nil && stamps != c.stamps {
		// Not again until a file changes once more, loaded or not.
		c.stamps = stamps
		if cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile); err != nil {
			c.log.Error(err, "keeping the TLS certificate last read", "certFile", c.certFile)
		} else {
			c.cert = &cert
			c.log.Info("TLS certificate reloaded", "certFile", c.certFile)
		}
	}
	return c.cert, nil
}
