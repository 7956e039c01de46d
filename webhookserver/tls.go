package webhookserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// newCertWatcher serves the certificate in a pair of files and picks up a
// new one when the files change (cert-manager renewing a mounted Secret), so
// a renewal needs no restart: controller-runtime's certwatcher, which
// watches the files and re-reads them every 10 s besides. A pair that does
// not load (half-written, or a key that does not match) is logged and the
// previous certificate kept. It watches until ctx ends.
func newCertWatcher(ctx context.Context, certFile, keyFile string, log logr.Logger) (*certwatcher.CertWatcher, error) {
	cw, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	// The callback runs at once for the certificate just loaded, then for
	// each new one.
	var loaded atomic.Bool
	cw.RegisterCallback(func(tls.Certificate) {
		if loaded.Swap(true) {
			log.Info("TLS certificate reloaded", "certFile", certFile)
		}
	})
	go func() {
		if err := cw.Start(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "cannot watch the TLS certificate files; a renewed certificate needs a restart", "certFile", certFile)
		}
	}()
	return cw, nil
}
