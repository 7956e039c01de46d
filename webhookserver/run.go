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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/webhookserver/authz"
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
	// config reaches the cluster, unless client is set.
	config *rest.Config
	client kubernetes.Interface
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
	cs := d.client
	if cs == nil {
		if cs, err = kubernetes.NewForConfig(d.config); err != nil {
			return fmt.Errorf("building the Kubernetes client: %w", err)
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
	srv, err := NewServer(ServerConfig{
		Index:          idx,
		Limiter:        lim,
		Clock:          clk,
		Environment:    o.Environment,
		TrustedProxies: o.TrustedProxies,
		TrustedHops:    o.TrustedHops,
		Routes:         o.Routes,
		Registerer:     reg,
		LogDecisions:   o.LogDecisions,
		Log:            log.WithName("decisions"),
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
		certs, err := newCertWatcher(watchCtx, o.TLSCertFile, o.TLSKeyFile, log.WithName("tls"))
		if err != nil {
			return err
		}
		tlsConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	}

	// Bind before anything starts, so a taken port is an error from Run.
	ln := d.listener
	if ln == nil {
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", o.Listen); err != nil {
			return fmt.Errorf("listening on %s: %w", o.Listen, err)
		}
	}
	if o.DeadlineSweep > 0 {
		// Always the real clock: net/http sets the deadlines from time.Now.
		ln = sweeper.New(ln, o.DeadlineSweep, clock.RealClock{})
	}
	defer func() { _ = ln.Close() }()
	mln := d.metricsListener
	if mln == nil && o.MetricsAddr != "0" {
		if mln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", o.MetricsAddr); err != nil {
			return fmt.Errorf("listening on %s for metrics: %w", o.MetricsAddr, err)
		}
	}
	if mln != nil {
		defer func() { _ = mln.Close() }()
	}
	gln := d.grpcListener
	if gln == nil && o.GRPCListen != "" {
		if gln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", o.GRPCListen); err != nil {
			return fmt.Errorf("listening on %s for gRPC: %w", o.GRPCListen, err)
		}
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

	if o.GCTuning {
		tuned := gctune.Start(watchCtx)
		// Stop the tuner, and wait for it to put GOGC back, before
		// returning: the process may go on (tests, dev).
		defer func() { stopWatch(); <-tuned }()
	}
	watcher := records.NewWatcher(cs, o.RecordsNamespace, store)
	go watcher.Run(watchCtx)
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
		srv.SetReady(true)
		if grpcHealth != nil {
			setHealth(grpcHealth, true)
		}
		if d.ready != nil {
			d.ready(srv)
		}
	}()

	api, takeover := newAPIServer(srv, o.MaxHeaderBytes, o.KeepaliveTakeover)
	if takeover != nil {
		if err := registerTakeoverMetrics(reg, takeover); err != nil {
			return err
		}
	}
	api.TLSConfig = tlsConfig
	api.ErrorLog = newStdLogger(log.WithName("http"))
	servers := []*http.Server{api}
	errc := make(chan error, 3)
	go func() {
		var err error
		if tlsConfig != nil {
			err = api.ServeTLS(ln, "", "")
		} else {
			err = api.Serve(ln)
		}
		errc <- err
	}()
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		metrics := newHTTPServer(mux, DefaultMaxHeaderBytes)
		metrics.ErrorLog = api.ErrorLog
		servers = append(servers, metrics)
		go func() { errc <- metrics.Serve(mln) }()
	}
	if gsrv != nil {
		go func() { errc <- gsrv.Serve(gln) }()
	}
	grpcAddr := ""
	if gln != nil {
		grpcAddr = gln.Addr().String()
	}
	log.Info("serving", "listen", ln.Addr().String(), "grpc", grpcAddr, "tls", tlsConfig != nil, "grpcClientCA", o.GRPCClientCA != "", "metrics", o.MetricsAddr,
		"namespace", o.RecordsNamespace, "environment", o.Environment, "routes", len(o.Routes),
		"sharedRateLimits", o.RedisURL != "", "logDecisions", o.LogDecisions,
		"gcTuning", o.GCTuning, "deadlineSweep", o.DeadlineSweep.String(), "keepaliveTakeover", o.KeepaliveTakeover)

	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serving: %w", err)
	}
	srv.SetReady(false)
	if grpcHealth != nil {
		setHealth(grpcHealth, false)
	}
	if err == nil && o.ShutdownDelay > 0 {
		log.Info("draining before shutdown", "delay", o.ShutdownDelay)
		time.Sleep(o.ShutdownDelay)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	grpcStopped := make(chan struct{})
	if gsrv != nil {
		// GracefulStop waits for in-flight calls; Stop below ends the wait
		// at the shutdown timeout.
		go func() { gsrv.GracefulStop(); close(grpcStopped) }()
	} else {
		close(grpcStopped)
	}
	// Connections taken over are no longer net/http's to shut down: they
	// are shut down alongside, so that idle ones close at once and busy
	// ones after their answer, as net/http's own.
	takeoverStopped := make(chan error, 1)
	if takeover != nil {
		go func() { takeoverStopped <- takeover.Shutdown(shutdownCtx) }()
	} else {
		takeoverStopped <- nil
	}
	for _, s := range servers {
		if serr := s.Shutdown(shutdownCtx); serr != nil {
			log.Info("in-flight requests did not finish in time; closing connections", "timeout", o.ShutdownTimeout)
			_ = s.Close()
		}
	}
	if terr := <-takeoverStopped; terr != nil {
		log.Info("in-flight requests on connections taken over did not finish in time; closed them", "timeout", o.ShutdownTimeout)
	}
	select {
	case <-grpcStopped:
	case <-shutdownCtx.Done():
		log.Info("in-flight gRPC calls did not finish in time; closing connections", "timeout", o.ShutdownTimeout)
		gsrv.Stop()
		<-grpcStopped
	}
	log.Info("stopped")
	return err
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
