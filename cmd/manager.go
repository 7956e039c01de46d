// Package cmd holds the meterr-operator subcommands' wiring. It sits above
// both planes (controllers and webhookserver), which never import it, and
// outside internal/, which holds only leaves both planes share; `dev` and the
// tests run the same code in one process.
package cmd

import (
	"cmp"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/buildinfo"
	"github.com/meterr/meterr-operator/internal/usage"
)

// ManagerOptions are the manager's flags.
type ManagerOptions struct {
	RecordsNamespace        string
	MetricsAddr             string
	MetricsSecure           bool
	ProbeAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string
	TombstoneRetention      time.Duration
	QPS                     float64
	Burst                   int
	MaxConcurrentReconciles int
	MinRotationInterval     time.Duration
	RoutineEvents           bool
	Intake                  IntakeOptions
	// Last used (controllers/usage.go): off unless UsageTokenFile is set.
	UsageTokenFile          string
	UsageService            string
	UsageNamespace          string
	UsageEndpoints          []string
	UsagePort               string
	LastUsedInterval        time.Duration
	LastUsedWritesPerSecond float64
	OverlapWarningWindow    time.Duration

	// Version and Commit label meterr_build_info; main sets them from its
	// build-time stamps. Not flags.
	Version, Commit string
}

// AddFlags registers the manager's flags.
func (o *ManagerOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.RecordsNamespace, "records-namespace", "meterr-system", "Namespace that holds the key records (the auth server reads Secrets here only).")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8443", "Address of the Prometheus metrics endpoint; \"0\" disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, only to callers the API server authenticates (TokenReview) and authorizes (SubjectAccessReview for GET /metrics, e.g. the meterr-metrics-reader ClusterRole). false serves plain HTTP to anyone who can reach the port.")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz; \"0\" disables it.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election lease (default: --records-namespace).")
	fs.DurationVar(&o.TombstoneRetention, "tombstone-retention", 720*time.Hour, "How long an expired key version stays in its record, so its callers get expired_api_key rather than invalid_api_key.")
	// A rotation costs four API requests per key (docs/architecture.md): at
	// 50 QPS a wave of 10,000 keys would take over ten minutes. The API
	// server's priority and fairness still protects it from this client.
	fs.Float64Var(&o.QPS, "kube-api-qps", 500, "Requests per second to the Kubernetes API (client-side limit).")
	fs.IntVar(&o.Burst, "kube-api-burst", 1000, "Burst of requests to the Kubernetes API (client-side limit).")
	fs.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", 16, "MeterrAPIKeys reconciled in parallel.")
	fs.BoolVar(&o.RoutineEvents, "routine-events", false, "Also record a Normal event for every routine key issue (the first key, a scheduled or requested rotation): one more API request per key and rotation. Warnings (drift, conflicts, leaked keys) are always recorded.")
	o.Intake.AddFlags(fs)
	fs.StringVar(&o.UsageTokenFile, "usage-token-file", "", "File holding the bearer token of the auth server's usage report (its --usage-token-file): with it, the manager pulls every replica and writes status.currentKey.lastUsedAt and status.previousKeys[].lastUsedAt. Empty turns last-used off.")
	fs.StringVar(&o.UsageService, "usage-service", "meterr-auth-server-metrics", "The auth server's metrics Service, in --usage-namespace: its EndpointSlices list the replicas to pull.")
	fs.StringVar(&o.UsageNamespace, "usage-namespace", "", "Namespace of --usage-service (default: --records-namespace).")
	fs.Func("usage-endpoints", "Comma-separated host:port of the auth server replicas' metrics ports, instead of --usage-service's EndpointSlices (development and tests).", func(v string) error {
		o.UsageEndpoints = nil
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(e); err != nil {
				return err
			}
			o.UsageEndpoints = append(o.UsageEndpoints, e)
		}
		return nil
	})
	fs.StringVar(&o.UsagePort, "usage-port", "http-metrics", "The name of that Service's metrics port.")
	fs.DurationVar(&o.LastUsedInterval, "last-used-interval", controllers.DefaultLastUsedInterval, "Least time between two lastUsedAt writes of one key; a write happens only when the value moved.")
	fs.Float64Var(&o.LastUsedWritesPerSecond, "last-used-writes-per-second", controllers.DefaultLastUsedWritesPerSecond, "Cap on lastUsedAt status writes of all keys together; with more active keys than the cap allows, every key's lag grows alike.")
	fs.DurationVar(&o.OverlapWarningWindow, "overlap-warning-window", 0, "A previous key version used within this long before its overlap ends makes the key PreviousKeyInUse (a Warning Event PreviousKeyStillInUse, a condition, a metric). 0: the last tenth of each key's overlap, at most 24h. Needs --usage-token-file.")
	fs.DurationVar(&o.MinRotationInterval, "min-rotation-interval", controllers.DefaultMinRotationInterval, "Least time between a key's last rotation and one requested by spec.rotation.requestedAt; a faster request waits, and the key's Ready condition says until when. 0 disables the minimum.")
}

// Validate checks the flags.
func (o *ManagerOptions) Validate() error {
	switch {
	case o.RecordsNamespace == "":
		return fmt.Errorf("--records-namespace must not be empty")
	case o.TombstoneRetention < 0:
		return fmt.Errorf("--tombstone-retention must not be negative")
	case o.QPS <= 0 || o.Burst <= 0:
		return fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive")
	case o.MaxConcurrentReconciles < 1:
		return fmt.Errorf("--max-concurrent-reconciles must be at least 1")
	case o.MinRotationInterval < 0:
		return fmt.Errorf("--min-rotation-interval must not be negative")
	// The last-used settings count only with --usage-token-file (a caller
	// building options in code, as dev does, may leave them zero).
	case o.UsageTokenFile != "" && o.LastUsedInterval < time.Second:
		return fmt.Errorf("--last-used-interval must be at least 1s")
	case o.UsageTokenFile != "" && o.OverlapWarningWindow < 0:
		return fmt.Errorf("--overlap-warning-window must not be negative")
	case o.UsageTokenFile != "" && o.LastUsedWritesPerSecond <= 0:
		return fmt.Errorf("--last-used-writes-per-second must be positive")
	}
	return o.Intake.Validate()
}

// metricsOptions serves metrics as kubebuilder scaffolds them: over TLS
// (a self-signed certificate unless one is mounted), to authenticated and
// authorized callers only.
func metricsOptions(o ManagerOptions) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.MetricsSecure}
	if o.MetricsSecure {
		m.FilterProvider = metricsAuthFilter
		// No HTTP/2: its rapid-reset weaknesses (CVE-2023-44487) buy a
		// metrics endpoint nothing.
		m.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	}
	return m
}

// RunManager runs the controller until ctx is done.
func RunManager(ctx context.Context, cfg *rest.Config, o ManagerOptions) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if err := buildinfo.Register(metrics.Registry, o.Version, o.Commit); err != nil {
		return fmt.Errorf("registering %s: %w", buildinfo.Name, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(o.QPS), o.Burst
	leNamespace := o.LeaderElectionNamespace
	if leNamespace == "" {
		leNamespace = o.RecordsNamespace
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  authv1alpha1.Scheme,
		Cache:                   controllers.CacheOptions(),
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "meterr-operator.auth.meterr.ai",
		LeaderElectionNamespace: leNamespace,
		// The manager stops on SIGTERM; a quick hand-over keeps rotations on time.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	r := &controllers.MeterrAPIKeyReconciler{
		Client: mgr.GetClient(),
		Options: controllers.Options{
			RecordsNamespace:        o.RecordsNamespace,
			TombstoneRetention:      o.TombstoneRetention,
			MaxConcurrentReconciles: o.MaxConcurrentReconciles,
			MinRotationInterval:     o.MinRotationInterval,
			RoutineEvents:           o.RoutineEvents,
		},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up controller: %w", err)
	}
	reaper := &controllers.RecordReaper{Client: mgr.GetClient(), RecordsNamespace: o.RecordsNamespace}
	if err := reaper.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the record reaper: %w", err)
	}
	if err := addIntake(mgr, o.Intake, o.RecordsNamespace); err != nil {
		return fmt.Errorf("setting up the leak intakes: %w", err)
	}
	if o.UsageTokenFile != "" {
		token, err := usage.ReadToken(o.UsageTokenFile)
		if err != nil {
			return fmt.Errorf("--usage-token-file: %w", err)
		}
		w := &controllers.UsageWriter{
			Client: mgr.GetClient(),
			Source: &controllers.EndpointSliceSource{Reader: mgr.GetAPIReader(), Namespace: cmp.Or(o.UsageNamespace, o.RecordsNamespace),
				Service: o.UsageService, PortName: o.UsagePort, Token: token, Static: o.UsageEndpoints,
				HTTP: &http.Client{Timeout: 10 * time.Second}},
			Clock:           clock.RealClock{},
			Interval:        o.LastUsedInterval,
			PullInterval:    controllers.DefaultUsagePullInterval,
			WritesPerSecond: o.LastUsedWritesPerSecond,
			WarningWindow:   o.OverlapWarningWindow,
			Recorder:        mgr.GetEventRecorder("meterr-operator"),
			Log:             ctrl.Log.WithName("last-used"),
		}
		if err := mgr.Add(w); err != nil {
			return fmt.Errorf("setting up last-used: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
