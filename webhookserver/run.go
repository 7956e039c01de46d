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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver/index"
)

// Timeouts of the HTTP servers. Auth requests are small and answered from
// memory; anything slower is a slow or stuck client.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 120 * time.Second
	// deadlineSweep is how late a timeout of the API server may fire (see
	// coarseListener).
	deadlineSweep = 100 * time.Millisecond
)

// Run runs the auth server until ctx is cancelled: it watches the key records
// in o.RecordsNamespace, serves the auth API on o.Listen and metrics on
// o.MetricsAddr, and on cancellation lets in-flight requests finish (for at
// most o.ShutdownTimeout). It returns an error when the options are invalid or
// a listener cannot be bound, and nil after a clean shutdown.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	if o.RedisURL == "" {
		o.RedisURL = os.Getenv(RedisURLEnv)
	}
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
	// grpcListener, when set, is used instead of binding o.GRPCListen.
	grpcListener net.Listener
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
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo(o.Version, o.Commit))

	idx := index.New()
	var lim Limiter = NewMemoryLimiter()
	if o.RedisURL != "" {
		rl, err := NewRedisLimiter(RedisOptions{URL: o.RedisURL, Timeout: o.RedisTimeout,
			FailureMode: o.RedisFailureMode, Registerer: reg, Log: log.WithName("limiter"), Now: d.clock.Now})
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
		Clock:          d.clock,
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
	ln = newCoarseListener(ln, deadlineSweep)
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
		gsrv, grpcHealth = NewGRPCServer(srv, o.MaxHeaderBytes, tlsConfig)
	}

	// Watch only key records, only in the records namespace. A reflector
	// feeds the index directly: no informer store keeps a copy of every
	// Secret (for 100,000 records that copy alone is about 200 MB of heap).
	l := &loader{idx: idx, limiter: lim, errors: recordErrors, log: log.WithName("records")}
	store := &recordStore{l: l, synced: make(chan struct{})}
	ns := o.RecordsNamespace
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			lo.LabelSelector = record.Selector
			return cs.CoreV1().Secrets(ns).List(ctx, lo)
		},
		WatchFuncWithContext: func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			lo.LabelSelector = record.Selector
			return cs.CoreV1().Secrets(ns).Watch(ctx, lo)
		},
	}, cs)
	reflector := cache.NewReflectorWithOptions(lw, &corev1.Secret{}, store, cache.ReflectorOptions{Name: "key-records"})
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go reflector.RunWithContext(watchCtx)
	go tuneGC(watchCtx)
	go func() {
		select {
		case <-watchCtx.Done():
			return
		case <-store.synced:
		}
		// The initial list held every record at once. Collect it once the
		// reflector has let go of it (it records the list's version right
		// after Replace returns) and give the memory back before saying
		// ready, so a new replica starts at its steady-state size.
		// (Bounded: readiness must not hang on a detail of client-go.)
		for deadline := time.Now().Add(2 * time.Second); reflector.LastSyncResourceVersion() == "" && time.Now().Before(deadline); {
			select {
			case <-watchCtx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
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

	api := newHTTPServer(srv, o.MaxHeaderBytes)
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
	log.Info("serving", "listen", ln.Addr().String(), "grpc", grpcAddr, "tls", tlsConfig != nil, "metrics", o.MetricsAddr,
		"namespace", o.RecordsNamespace, "environment", o.Environment, "routes", len(o.Routes),
		"sharedRateLimits", o.RedisURL != "", "logDecisions", o.LogDecisions)

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
	for _, s := range servers {
		if serr := s.Shutdown(shutdownCtx); serr != nil {
			log.Info("in-flight requests did not finish in time; closing connections", "timeout", o.ShutdownTimeout)
			_ = s.Close()
		}
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

// recordStore is the reflector's store: it compiles each record into the
// index and keeps nothing else. The reflector calls it from one goroutine.
type recordStore struct {
	l      *loader
	synced chan struct{}
	once   bool
}

var _ cache.TransformingStore = (*recordStore)(nil)

// Transformer installs each record in the index as the initial list (or a
// relist) streams in, and leaves the reflector's temporary store, which holds
// that whole list until Replace, only the record's name (client-go's
// TransformingStore). Installing early is safe: before the first full list
// the server answers not_ready, and afterwards a streamed record is simply
// its newest state, as a watch event would be; Replace still drops the
// records the list no longer has.
func (s *recordStore) Transformer() cache.TransformFunc {
	return func(obj any) (any, error) {
		if sec, ok := obj.(*corev1.Secret); ok {
			s.l.upsert(sec)
			return &streamedRecord{namespace: sec.Namespace, name: sec.Name}, nil
		}
		return obj, nil
	}
}

// streamedRecord is what the temporary store keeps of a streamed record
// Secret: its name. The store finds it through GetObjectMeta.
type streamedRecord struct{ namespace, name string }

func (r *streamedRecord) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: r.namespace, Name: r.name}
}

// A runtime.Object too, for client-go's debug checks of the streamed list.
func (r *streamedRecord) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (r *streamedRecord) DeepCopyObject() runtime.Object   { out := *r; return &out }

var _ runtime.Object = (*streamedRecord)(nil)

func (s *recordStore) Add(obj any) error    { s.l.upsert(obj); return nil }
func (s *recordStore) Update(obj any) error { s.l.upsert(obj); return nil }
func (s *recordStore) Delete(obj any) error { s.l.delete(obj); return nil }
func (s *recordStore) Resync() error        { return nil }

// Replace loads a full list: every record in it, and drops the records the
// index holds that are no longer there.
func (s *recordStore) Replace(list []any, _ string) error {
	keep := make(map[string]struct{}, len(list))
	for _, obj := range list {
		switch o := obj.(type) {
		case *corev1.Secret: // a plain list, without the transformer
			keep[o.Name] = struct{}{}
			s.l.upsert(o)
		case *streamedRecord: // installed as it streamed in
			keep[o.name] = struct{}{}
		}
	}
	for _, name := range s.l.idx.Names() {
		if _, ok := keep[name]; !ok {
			s.l.deleteName(name)
		}
	}
	if !s.once {
		s.once = true
		close(s.synced)
	}
	return nil
}

// loader feeds the index from the reflector's events. Log lines name records, never
// keys.
type loader struct {
	idx     *index.Index
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
	c := index.Compile(s.Name, r, s.CreationTimestamp.Time)
	if err := l.idx.Install(c); err != nil {
		l.errors.Inc()
		l.log.Error(err, "key record loaded with problems", "record", s.Name, "owner", c.Policy.Owner())
		return
	}
	l.log.V(1).Info("key record loaded", "record", s.Name, "owner", c.Policy.Owner(), "versions", len(c.Keys))
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
	l.deleteName(name)
}

func (l *loader) deleteName(name string) {
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
