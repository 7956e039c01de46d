package webhookserver

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// certRecheck is how often the certificate files are looked at for changes.
const certRecheck = 10 * time.Second

// certReloader serves the certificate in a pair of files and picks up a new
// one when the files change (cert-manager renewing a mounted Secret), so a
// renewal needs no restart. A pair that does not load (half-written, or a
// key that does not match) is logged and the previous certificate kept.
type certReloader struct {
	certFile, keyFile string
	clock             clock.PassiveClock
	log               logr.Logger

	mu              sync.Mutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
	checked         time.Time
}

func newCertReloader(certFile, keyFile string, c clock.PassiveClock, log logr.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, clock: c, log: log}
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	r.checked = c.Now()
	return r, nil
}

func (r *certReloader) load() error {
	cs, err := os.Stat(r.certFile)
	if err != nil {
		return err
	}
	ks, err := os.Stat(r.keyFile)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert, r.certMod, r.keyMod = &cert, cs.ModTime(), ks.ModTime()
	return nil
}

// GetCertificate is the tls.Config hook.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	if now.Sub(r.checked) < certRecheck {
		return r.cert, nil
	}
	r.checked = now
	cs, err1 := os.Stat(r.certFile)
	ks, err2 := os.Stat(r.keyFile)
	if err1 != nil || err2 != nil || (cs.ModTime().Equal(r.certMod) && ks.ModTime().Equal(r.keyMod)) {
		return r.cert, nil
	}
	if err := r.load(); err != nil {
		r.log.Error(err, "keeping the previous TLS certificate", "certFile", r.certFile)
		return r.cert, nil
	}
	r.log.Info("TLS certificate reloaded", "certFile", r.certFile)
	return r.cert, nil
}
