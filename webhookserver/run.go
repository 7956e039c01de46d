package webhookserver

import (
	"context"
	"crypto/tls"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/record"
)

// Timeouts of the HTTP servers. Auth requests are small and answered from
// memory; anything slower is a slow or stuck client.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 120 * time.Second
)

// Run runs the auth server until ctx is cancelled: it watches the key records
// in o.RecordsNamespace, serves the auth API on o.Listen and metrics on
// o.MetricsAddr, and on cancellation lets in-flight requests finish (for at
// most o.ShutdownTimeout). It returns an error when the options are invalid or
// a listener cannot be bound, and nil after a clean shutdown.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("building the Kubernetes client: %w", err)
	}
	return run(ctx, cs, o, log, runDeps{})
}

// runDeps are what tests substitute.
type runDeps struct {
	clock clock.PassiveClock
	// listener and metricsListener, when set, are used instead of binding
	// o.Listen and o.MetricsAddr.
	listener, metricsListener net.Listener
	// ready, when set, is called once the server is ready.
	ready func(*Server)
}

func run(ctx context.Context, cs kubernetes.Interface, o Options, log logr.Logger, d runDeps) (err error) {
	if err := o.Validate(); err != nil {
		return err
	}
	if d.clock == nil {
		d.clock = o.Clock
	}
	if d.clock == nil {
		d.clock = clock.RealClock{}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	idx := NewMemoryIndex()
	lim := NewMemoryLimiter()
	srv, err := NewServer(ServerConfig{
		Index:          idx,
		Limiter:        lim,
		Clock:          d.clock,
		Environment:    o.Environment,
		TrustedProxies: o.TrustedProxies,
		Routes:         o.Routes,
		Registerer:     reg,
	})
	if err != nil {
		return err
	}
	recordErrors, err := registerIndexMetrics(reg, idx)
	if err != nil {
		return err
	}

	var tlsConfig *tls.Config
	if o.TLSCertFile != "" {
		certs, err := newCertReloader(o.TLSCertFile, o.TLSKeyFile, d.clock, log.WithName("tls"))
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

	// Watch only key records, only in the records namespace.
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithNamespace(o.RecordsNamespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = record.Selector }),
		informers.WithTransform(stripManagedFields),
	)
	informer := factory.Core().V1().Secrets().Informer()
	l := &loader{idx: idx, limiter: lim, errors: recordErrors, log: log.WithName("records")}
	reg2, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    l.upsert,
		UpdateFunc: func(_, obj any) { l.upsert(obj) },
		DeleteFunc: l.delete,
	})
	if err != nil {
		return fmt.Errorf("watching key records: %w", err)
	}
	informerCtx, stopInformers := context.WithCancel(ctx)
	defer func() {
		stopInformers()
		factory.Shutdown()
	}()
	factory.Start(informerCtx.Done())
	go func() {
		if !cache.WaitForCacheSync(informerCtx.Done(), reg2.HasSynced) {
			return
		}
		records, keys := idx.Len()
		log.Info("key records loaded; ready", "namespace", o.RecordsNamespace, "records", records, "keys", keys)
		srv.SetReady(true)
		if d.ready != nil {
			d.ready(srv)
		}
	}()

	api := newHTTPServer(srv, o.MaxHeaderBytes)
	api.TLSConfig = tlsConfig
	api.ErrorLog = newStdLogger(log.WithName("http"))
	servers := []*http.Server{api}
	errc := make(chan error, 2)
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
	log.Info("serving", "listen", ln.Addr().String(), "tls", tlsConfig != nil, "metrics", o.MetricsAddr,
		"namespace", o.RecordsNamespace, "environment", o.Environment, "routes", len(o.Routes))

	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serving: %w", err)
	}
	srv.SetReady(false)
	if err == nil && o.ShutdownDelay > 0 {
		log.Info("draining before shutdown", "delay", o.ShutdownDelay)
		time.Sleep(o.ShutdownDelay)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if serr := s.Shutdown(shutdownCtx); serr != nil {
			log.Info("in-flight requests did not finish in time; closing connections", "timeout", o.ShutdownTimeout)
			_ = s.Close()
		}
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

// stripManagedFields drops what the auth server never reads from the cached
// Secrets.
func stripManagedFields(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
	}
	return obj, nil
}

// loader feeds the index from informer events. Log lines name records, never
// keys.
type loader struct {
	idx     *MemoryIndex
	limiter Limiter
	errors  prometheus.Counter
	log     logr.Logger
}

func (l *loader) upsert(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	r, err := record.Decode(s)
	if err != nil {
		// Fail closed: a record we cannot read must not leave its old
		// entries in force (it may have just disabled the key). The quota
		// is kept: the record will most likely be readable again.
		l.idx.Delete(s.Name)
		l.errors.Inc()
		l.log.Error(err, "skipping key record", "record", s.Name)
		return
	}
	if err := l.idx.Upsert(s.Name, r); err != nil {
		l.errors.Inc()
		l.log.Error(err, "key record loaded with problems", "record", s.Name, "owner", r.Owner.String())
		return
	}
	l.log.V(1).Info("key record loaded", "record", s.Name, "owner", r.Owner.String(), "versions", len(r.Keys))
}

func (l *loader) delete(obj any) {
	var name string
	switch o := obj.(type) {
	case *corev1.Secret:
		name = o.Name
	case cache.DeletedFinalStateUnknown:
		_, n, err := cache.SplitMetaNamespaceKey(o.Key)
		if err != nil {
			return
		}
		name = n
	default:
		return
	}
	if id, ok := l.idx.Delete(name); ok {
		l.limiter.Forget(id)
		l.log.V(1).Info("key record removed", "record", name)
	}
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
