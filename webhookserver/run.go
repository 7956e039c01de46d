package webhookserver

import (
	"context"
	"crypto/tls"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/usage"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/exepages"
	"github.com/meterr/meterr-operator/webhookserver/gctune"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/keepalive"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/records"
	"github.com/meterr/meterr-operator/webhookserver/sweeper"
)

// Timeouts of the HTTP servers. Auth requests are small and answered from
// memory; anything slower is a slow or stuck client.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 120 * time.Second
)

// Both limiters are the decision's one limiter interface.
var (
	_ authz.Limiter = (*ratelimit.Memory)(nil)
	_ authz.Limiter = (*ratelimit.Redis)(nil)
)

// Run runs the auth server until ctx is cancelled: it watches the key records
// in o.RecordsNamespace, serves the auth API on o.Listen and metrics on
// o.MetricsAddr, and on cancellation lets in-flight requests finish (for at
// most o.ShutdownTimeout). It returns an error when the options are invalid or
// a listener cannot be bound, and nil after a clean shutdown.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	if o.RedisURL == "" {
		o.RedisURL = os.Getenv(ratelimit.RedisURLEnv)
	}
	return run(ctx, o, log, runDeps{config: cfg})
}

// runDeps are the cluster, and what tests substitute.
type runDeps struct {
	// config reaches the cluster, unless secrets is set.
	config *rest.Config
	// secrets, when set, are the Secrets of o.RecordsNamespace (tests: a
	// fake clientset's).
	secrets records.Secrets
	// listener and metricsListener, when set, are used instead of binding
	// o.Listen and o.MetricsAddr.
	listener, metricsListener net.Listener
	// grpcListener, when set, is used instead of binding o.GRPCListen.
	grpcListener net.Listener
	// ready, when set, is called once the server is ready.
	ready func(*Server)
}

func run(ctx context.Context, o Options, log logr.Logger, d runDeps) (err error) {
	if err := o.Validate(); err != nil {
		return err
	}
	secrets := d.secrets
	if secrets == nil {
		if secrets, err = records.NewSecrets(d.config, o.RecordsNamespace); err != nil {
			return err
		}
	}
	// The one clock of every decision and of the limiter's windows.
	var clk clock.PassiveClock = clock.RealClock{}
	if o.Clock != nil {
		clk = o.Clock
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo(o.Version, o.Commit))

	idx := index.New()
	// The limiter decides (authz.Limiter) and forgets a removed key's count
	// (records.Config.Limiter).
	var lim interface {
		authz.Limiter
		Forget(id string)
	} = ratelimit.NewMemory()
	if o.RedisURL != "" {
		rl, err := ratelimit.NewRedis(ratelimit.RedisOptions{URL: o.RedisURL, Timeout: o.RedisTimeout,
			FailureMode: o.RedisFailureMode, Registerer: reg, Log: log.WithName("limiter"), Now: clk.Now})
		if err != nil {
			return err
		}
		defer func() { _ = rl.Close() }()
		// Say early whether Redis answers, without holding up start-up: the
		// failure mode covers the time until it does.
		go func() {
			pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := rl.Ping(pingCtx); err != nil && ctx.Err() == nil {
				log.Error(err, "redis does not answer yet; rate limits fail "+o.RedisFailureMode+" until it does")
			}
		}()
		lim = rl
	}
	sources := o.credentialSources()
	srv, err := NewServer(ServerConfig{
		Index:             idx,
		Limiter:           lim,
		Clock:             clk,
		Environment:       o.Environment,
		TrustedProxies:    o.TrustedProxies,
		TrustedHops:       o.TrustedHops,
		Routes:            o.Routes,
		CredentialSources: sources,
		Registerer:        reg,
		LogDecisions:      o.LogDecisions,
		Log:               log.WithName("decisions"),
	})
	if err != nil {
		return err
	}
	if err := registerIndexMetrics(reg, idx); err != nil {
		return err
	}
	store, err := records.NewStore(records.Config{Sink: idx, Limiter: lim, Registerer: reg, Log: log.WithName("records")})
	if err != nil {
		return err
	}

	// Everything started below that outlives a request stops with watchCtx.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()

	var tlsConfig *tls.Config
	if o.TLSCertFile != "" {
		certs, err := newServingCert(o.TLSCertFile, o.TLSKeyFile, log.WithName("tls"))
		if err != nil {
			return err
		}
		tlsConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	}

	// Bind before anything starts, so a taken port is an error from Run.
	ln, err := bindListener(ctx, d.listener, o.Listen, true, "")
	if err != nil {
		return err
	}
	if o.DeadlineSweep > 0 {
		// Always the real clock: net/http sets the deadlines from time.Now.
		ln = sweeper.New(ln, o.DeadlineSweep, clock.RealClock{})
	}
	defer func() { _ = ln.Close() }()
	mln, err := bindListener(ctx, d.metricsListener, o.MetricsAddr, o.MetricsAddr != "0", " for metrics")
	if err != nil {
		return err
	}
	if mln != nil {
		defer func() { _ = mln.Close() }()
	}
	gln, err := bindListener(ctx, d.grpcListener, o.GRPCListen, o.GRPCListen != "", " for gRPC")
	if err != nil {
		return err
	}
	if gln != nil {
		defer func() { _ = gln.Close() }()
	}

	var gsrv *grpc.Server
	var grpcHealth *health.Server
	if gln != nil {
		grpcTLS := tlsConfig
		if o.GRPCClientCA != "" {
			cas, err := newClientCAs(o.GRPCClientCA, log.WithName("grpc-client-ca"))
			if err != nil {
				return err
			}
			grpcTLS = grpcTLSConfig(tlsConfig, cas, o.GRPCClientSANs)
		}
		gsrv, grpcHealth = NewGRPCServer(srv, o.MaxHeaderBytes, grpcTLS)
	}

	// Closed once the records are loaded and the server is ready.
	serving := make(chan struct{})
	if o.GCTuning {
		tuned := gctune.Start(watchCtx, serving)
		// Stop the tuner, and wait for it to put GOGC back, before
		// returning: the process may go on (tests, dev).
		defer func() { stopWatch(); <-tuned }()
	}
	watcher := records.NewWatcher(secrets, store)
	go watcher.Run(watchCtx)

	api, takeover := newAPIServer(srv.Handler(), o.MaxHeaderBytes, o.KeepaliveTakeover)
	if takeover != nil {
		if err := registerTakeoverMetrics(reg, takeover); err != nil {
			return err
		}
	}
	api.TLSConfig = tlsConfig
	api.ErrorLog = newStdLogger(log.WithName("http"))

	// The process is this list: each component is started once and drained
	// once, in this order (gRPC and the connections taken over drain
	// alongside the HTTP servers, which drain one after the other).
	comps := []component{{ready: srv.SetReady}}
	if gsrv != nil {
		comps = append(comps, grpcComponent(gsrv, grpcHealth, gln, o.ShutdownTimeout, log))
	}
	if takeover != nil {
		comps = append(comps, takeoverComponent(takeover, o.ShutdownTimeout, log))
	}
	comps = append(comps, httpComponent(api, func() error {
		if tlsConfig != nil {
			return api.ServeTLS(ln, "", "")
		}
		return api.Serve(ln)
	}, o.ShutdownTimeout, log))
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		if o.UsageTokenFile != "" {
			token, err := usage.ReadToken(o.UsageTokenFile)
			if err != nil {
				return fmt.Errorf("--usage-token-file: %w", err)
			}
			mux.Handle(usage.Path, usageHandler(idx, token, clk))
		}
		metrics := newHTTPServer(mux, DefaultMaxHeaderBytes)
		metrics.ErrorLog = api.ErrorLog
		comps = append(comps, httpComponent(metrics, func() error { return metrics.Serve(mln) }, o.ShutdownTimeout, log))
	}

	// One readiness: every component says ready once the records are loaded.
	go func() {
		if !watcher.WaitLoaded(watchCtx) {
			return
		}
		// The initial list held every record at once: collect it and give
		// the memory back before saying ready, so a new replica starts at
		// its steady-state size.
		debug.FreeOSMemory()
		records, keys := idx.Len()
		log.Info("key records loaded; ready", "namespace", o.RecordsNamespace, "records", records, "keys", keys)
		if o.ReleaseStartupPages {
			// Start-up is over: the executable's pages it touched
			// go back; those serving needs return at first use.
			before, after, err := exepages.Release()
			if err != nil {
				log.Error(err, "releasing the start-up pages of the executable")
			} else {
				log.Info("released the start-up pages of the executable", "residentFileBefore", before, "residentFileAfter", after)
			}
		}
		setReady(comps, true)
		close(serving)
		if d.ready != nil {
			d.ready(srv)
		}
	}()

	errc := make(chan error, len(comps))
	for _, c := range comps {
		if c.serve != nil {
			go func() { errc <- c.serve() }()
		}
	}
	grpcAddr := ""
	if gln != nil {
		grpcAddr = gln.Addr().String()
	}
	log.Info("serving", "listen", ln.Addr().String(), "grpc", grpcAddr, "tls", tlsConfig != nil, "grpcClientCA", o.GRPCClientCA != "", "metrics", o.MetricsAddr,
		"namespace", o.RecordsNamespace, "environment", o.Environment, "routes", len(o.Routes), "credentialSources", o.credentialSources().String(),
		"sharedRateLimits", o.RedisURL != "", "logDecisions", o.LogDecisions,
		"gcTuning", o.GCTuning, "deadlineSweep", o.DeadlineSweep.String(), "keepaliveTakeover", o.KeepaliveTakeover,
		"releaseStartupPages", o.ReleaseStartupPages)

	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serving: %w", err)
	}
	// Shutdown, in the documented order: not ready at once; after
	// --shutdown-delay the listeners close and in-flight requests finish
	// within --shutdown-timeout.
	setReady(comps, false)
	if err == nil && o.ShutdownDelay > 0 {
		log.Info("draining before shutdown", "delay", o.ShutdownDelay)
		time.Sleep(o.ShutdownDelay)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	waits := make([]func(), 0, len(comps))
	for _, c := range comps {
		if c.drain != nil {
			waits = append(waits, c.drain(shutdownCtx))
		}
	}
	for _, wait := range waits {
		wait()
	}
	log.Info("stopped")
	return err
}

// bindListener returns given, or else, when on, a listener bound to addr. what
// says what for, in the error.
func bindListener(ctx context.Context, given net.Listener, addr string, on bool, what string) (net.Listener, error) {
	if given != nil || !on {
		return given, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s%s: %w", addr, what, err)
	}
	return ln, nil
}

// component is one part of the running auth server. serve, when set, runs
// until the component fails or is drained; ready, when set, says whether it
// takes traffic (the one readiness: set for every component at once); drain,
// when set, starts draining within ctx, closing what is left when ctx ends,
// and returns what waits for the drain to end.
type component struct {
	serve func() error
	ready func(bool)
	drain func(ctx context.Context) (wait func())
}

// setReady sets the readiness of every component.
func setReady(comps []component, ready bool) {
	for _, c := range comps {
		if c.ready != nil {
			c.ready(ready)
		}
	}
}

// httpComponent serves s with serve and drains it at once: its listener
// closes and in-flight requests finish, or their connections are closed at
// the shutdown timeout.
func httpComponent(s *http.Server, serve func() error, timeout time.Duration, log logr.Logger) component {
	return component{serve: serve, drain: func(ctx context.Context) func() {
		if err := s.Shutdown(ctx); err != nil {
			log.Info("in-flight requests did not finish in time; closing connections", "timeout", timeout)
			_ = s.Close()
		}
		return func() {}
	}}
}

// grpcComponent serves the ext_authz front-end on ln, with its health
// service as its readiness. It drains in the background: GracefulStop waits
// for in-flight calls; Stop ends the wait at the shutdown timeout.
func grpcComponent(gs *grpc.Server, hs *health.Server, ln net.Listener, timeout time.Duration, log logr.Logger) component {
	return component{
		serve: func() error { return gs.Serve(ln) },
		ready: func(ready bool) { setHealth(hs, ready) },
		drain: func(ctx context.Context) func() {
			stopped := make(chan struct{})
			go func() { gs.GracefulStop(); close(stopped) }()
			return func() {
				select {
				case <-stopped:
				case <-ctx.Done():
					log.Info("in-flight gRPC calls did not finish in time; closing connections", "timeout", timeout)
					gs.Stop()
					<-stopped
				}
			}
		}}
}

// takeoverComponent drains the connections package keepalive took over from
// net/http: they are no longer net/http's to shut down, so they are shut
// down alongside, idle ones at once and busy ones after their answer, as
// net/http's own.
func takeoverComponent(ka *keepalive.Server, timeout time.Duration, log logr.Logger) component {
	return component{drain: func(ctx context.Context) func() {
		stopped := make(chan error, 1)
		go func() { stopped <- ka.Shutdown(ctx) }()
		return func() {
			if err := <-stopped; err != nil {
				log.Info("in-flight requests on connections taken over did not finish in time; closed them", "timeout", timeout)
			}
		}
	}}
}

// newHTTPServer returns an http.Server with every timeout set. net/http reads
// up to MaxHeaderBytes plus 4096 bytes before answering 431, so the allowance
// is taken off here: maxHeaderBytes is the real limit.
func newHTTPServer(h http.Handler, maxHeaderBytes int) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    max(maxHeaderBytes-4096, 1),
	}
}

// newAPIServer returns the auth API's http.Server and, with takeover, the
// keepalive.Server that serves its keep-alive connections after their first
// request, under the same header limit and timeouts.
func newAPIServer(h http.Handler, maxHeaderBytes int, takeover bool) (*http.Server, *keepalive.Server) {
	if !takeover {
		return newHTTPServer(h, maxHeaderBytes), nil
	}
	ka := keepalive.New(keepalive.Config{Handler: h, MaxHeaderBytes: maxHeaderBytes,
		ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, IdleTimeout: idleTimeout, WriteTimeout: writeTimeout})
	return newHTTPServer(ka.Handler(), maxHeaderBytes), ka
}

// newStdLogger routes net/http's own error log (TLS handshake failures and
// the like) to the structured logger.
func newStdLogger(log logr.Logger) *stdlog.Logger {
	return stdlog.New(logWriter{log}, "", 0)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(string(bytesTrimNewline(p)))
	return len(p), nil
}

func bytesTrimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
