package controllers

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/usage"
)

// Last used: the manager pulls each auth server replica's usage report
// (internal/usage), keeps the latest use of each key version across
// replicas (a maximum, so lastUsedAt never moves back, whichever replica
// restarts), and writes status.currentKey.lastUsedAt and
// status.previousKeys[].lastUsedAt: at most once an Interval per key, only
// when the value moved, and no more than WritesPerSecond in all, first
// come first served, so that when more keys are active than the cap allows
// every key's lag grows alike. See docs/architecture.md, "Last used".

// The replicas' EndpointSlices are listed in the auth server's namespace
// only: a Role the Helm chart adds with lastUsed.enabled
// (templates/usage.yaml), not a marker, because config/ does not turn
// last-used on (it would need a generated token).

// Defaults of the manager's last-used flags.
const (
	DefaultLastUsedInterval        = time.Minute
	DefaultLastUsedWritesPerSecond = 20
	// DefaultUsagePullInterval: how often each replica is asked.
	DefaultUsagePullInterval = 10 * time.Second
)

// UsageSource gives the uses reported since its previous call.
type UsageSource interface {
	Pull(ctx context.Context) ([]usage.Version, error)
}

// EndpointSliceSource pulls every ready endpoint of the auth server's
// metrics Service, found by its EndpointSlices, with the bearer token; it
// keeps a cursor per endpoint (the replica's own clock, so no clock skew
// matters), and a replica it has not seen, or a restarted one, reports in
// full.
type EndpointSliceSource struct {
	// Reader lists EndpointSlices; the uncached API reader, so that the
	// manager keeps no informer over the cluster's slices.
	Reader    client.Reader
	Namespace string
	// Service names the auth server's metrics Service; PortName its port.
	Service  string
	PortName string
	Token    []byte
	HTTP     *http.Client
	// Static, when set, lists the replicas (host:port) instead of the
	// EndpointSlices: for development and tests on loopback, which an
	// EndpointSlice may not hold.
	Static []string

	since map[string]int64
}

// Pull implements UsageSource. An endpoint that fails is reported in the
// error and asked again, from the same cursor, next time.
func (s *EndpointSliceSource) Pull(ctx context.Context) ([]usage.Version, error) {
	if s.since == nil {
		s.since = map[string]int64{}
	}
	seen := map[string]bool{}
	var out []usage.Version
	var errs []error
	var slices discoveryv1.EndpointSliceList
	if len(s.Static) == 0 {
		if err := s.Reader.List(ctx, &slices, client.InNamespace(s.Namespace),
			client.MatchingLabels{discoveryv1.LabelServiceName: s.Service}); err != nil {
			return nil, err
		}
	}
	// pull reads one replica's report since its cursor.
	pull := func(base string) {
		seen[base] = true
		rep, err := usage.Fetch(ctx, s.HTTP, base, s.Token, s.since[base])
		if err != nil {
			errs = append(errs, err)
			return
		}
		s.since[base] = rep.Now
		out = append(out, rep.Versions...)
	}
	for _, hostPort := range s.Static {
		pull("http://" + hostPort)
	}
	for i := range slices.Items {
		sl := &slices.Items[i]
		port := int32(0)
		for _, p := range sl.Ports {
			if p.Port != nil && (s.PortName == "" || (p.Name != nil && *p.Name == s.PortName)) {
				port = *p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			// Serving, not only ready: a replica draining still has
			// uses to report.
			if ep.Conditions.Serving != nil && !*ep.Conditions.Serving {
				continue
			}
			for _, addr := range ep.Addresses {
				pull("http://" + net.JoinHostPort(addr, strconv.Itoa(int(port))))
			}
		}
	}
	for base := range s.since {
		if !seen[base] {
			delete(s.since, base)
		}
	}
	return out, errors.Join(errs...)
}

var (
	lastUsedWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meterr_last_used_status_writes_total",
		Help: "Status writes of lastUsedAt (at most one per key per --last-used-interval, capped by --last-used-writes-per-second).",
	})
	lastUsedPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meterr_last_used_pending_keys",
		Help: "MeterrAPIKeys whose lastUsedAt has moved and waits to be written; a queue that keeps growing means more active keys than --last-used-writes-per-second allows.",
	})
	lastUsedLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meterr_last_used_lag_seconds",
		Help:    "Time from a use reaching the manager to its write in status.",
		Buckets: []float64{1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
	})
	previousKeyInUse = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meterr_previous_key_in_use_keys",
		Help: "MeterrAPIKeys whose PreviousKeyInUse condition is True: a previous key version was used within --overlap-warning-window before its overlap ends.",
	})
	usagePullErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meterr_usage_pull_errors_total",
		Help: "Failed pulls of an auth server replica's usage report.",
	})
)

func init() {
	metrics.Registry.MustRegister(previousKeyInUse, lastUsedWrites, lastUsedPending, lastUsedLag, usagePullErrors)
}

// UsageWriter writes lastUsedAt from a UsageSource. It runs on the leader
// only.
type UsageWriter struct {
	Client client.Client
	Source UsageSource
	Clock  clock.Clock
	// Interval is the least time between two writes of one key
	// (--last-used-interval); PullInterval how often Source is pulled.
	Interval     time.Duration
	PullInterval time.Duration
	// WritesPerSecond caps the writes of all keys
	// (--last-used-writes-per-second).
	WritesPerSecond float64
	// WarningWindow is --overlap-warning-window: a previous version used
	// within this long before its overlap ends makes the key
	// PreviousKeyInUse. 0: the last tenth of the key's overlap, at most 24h.
	WarningWindow time.Duration
	// Recorder receives the PreviousKeyStillInUse Warning Events.
	Recorder events.EventRecorder
	Log      logr.Logger

	limiter  *rate.Limiter
	lastPull time.Time
	keys     map[types.NamespacedName]*keyUse
	queue    []types.NamespacedName
	// warned are the keys whose PreviousKeyInUse is True: looked at on
	// every step until it clears.
	warned map[types.NamespacedName]bool
}

// keyUse is what the writer knows of one MeterrAPIKey's versions.
type keyUse struct {
	uid string
	// used is each version's latest use, Unix seconds.
	used      map[string]int64
	lastWrite time.Time
	queued    bool
	// since is when the oldest unwritten use reached the manager.
	since time.Time
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: one writer.
func (w *UsageWriter) NeedLeaderElection() bool { return true }

// usageTick is how often the writer spends its tokens: the bucket holds a
// second's worth (the cap), so writes are spread over each second rather
// than sent in a burst per pull.
const usageTick = time.Second

// Start implements manager.Runnable.
func (w *UsageWriter) Start(ctx context.Context) error {
	for {
		w.Step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-w.Clock.After(usageTick):
		}
	}
}

// Step pulls when PullInterval has passed since the last pull, and writes
// what is due and within the cap. Start calls it every second; tests call
// it on a fake clock.
func (w *UsageWriter) Step(ctx context.Context) {
	now := w.Clock.Now()
	if w.limiter == nil {
		burst := max(1, int(w.WritesPerSecond))
		w.limiter = rate.NewLimiter(rate.Limit(w.WritesPerSecond), burst)
		w.keys = map[types.NamespacedName]*keyUse{}
		w.warned = map[types.NamespacedName]bool{}
	}
	if w.lastPull.IsZero() || now.Sub(w.lastPull) >= w.PullInterval {
		w.lastPull = now
		vs, err := w.Source.Pull(ctx)
		if err != nil {
			usagePullErrors.Inc()
			w.Log.Error(err, "pulling usage from the auth server")
		}
		w.merge(vs, now)
		w.clearWarnings(ctx, now)
	}
	w.writeDue(ctx, now)
	lastUsedPending.Set(float64(len(w.queue)))
	previousKeyInUse.Set(float64(len(w.warned)))
}

// clearWarnings looks again at the keys warned about, whose warning clears
// with time alone (the version unused for a window, or its overlap over),
// and writes them outside the cap: at most one write per warned key, and
// the cap is for usage.
func (w *UsageWriter) clearWarnings(ctx context.Context, now time.Time) {
	for k := range w.warned {
		ku := w.keys[k]
		if ku == nil {
			ku = &keyUse{}
		}
		if ku.queued {
			continue // written (and looked at) with its usage
		}
		if err := w.write(ctx, k, ku, now, false); apierrors.IsNotFound(err) {
			delete(w.warned, k)
		}
	}
}

func (w *UsageWriter) merge(vs []usage.Version, now time.Time) {
	for _, v := range vs {
		k := types.NamespacedName{Namespace: v.Namespace, Name: v.Name}
		ku := w.keys[k]
		if ku == nil || ku.uid != v.UID {
			// A key deleted and created again is a new key.
			if ku == nil {
				ku = &keyUse{}
				w.keys[k] = ku
			}
			ku.uid, ku.used = v.UID, map[string]int64{}
		}
		if v.LastUsed > ku.used[v.KeyID] {
			ku.used[v.KeyID] = v.LastUsed
			if !ku.queued {
				ku.queued, ku.since = true, now
				w.queue = append(w.queue, k)
			}
		}
	}
}

// writeDue writes the queued keys whose interval has passed, in the order
// their uses arrived, while the cap allows.
func (w *UsageWriter) writeDue(ctx context.Context, now time.Time) {
	var waiting, rest []types.NamespacedName
	for i, k := range w.queue {
		ku := w.keys[k]
		if ku == nil {
			continue
		}
		if !ku.lastWrite.IsZero() && now.Sub(ku.lastWrite) < w.Interval {
			waiting = append(waiting, k)
			continue
		}
		if !w.limiter.AllowN(now, 1) {
			rest = w.queue[i:]
			break
		}
		switch err := w.write(ctx, k, ku, now, true); {
		case err == nil:
			lastUsedLag.Observe(now.Sub(ku.since).Seconds())
			ku.queued, ku.lastWrite = false, now
		case apierrors.IsNotFound(err):
			delete(w.keys, k)
		default:
			// A conflict (the reconciler wrote meanwhile) or an error:
			// again on the next step, behind the others.
			w.Log.V(1).Info("writing lastUsedAt", "key", k, "error", err.Error())
			waiting = append(waiting, k)
		}
	}
	w.queue = append(rest[:len(rest):len(rest)], waiting...)
}

// errGone: the key was deleted, or created again with another UID.
var errGone = apierrors.NewNotFound(authv1alpha1.GroupVersion.WithResource("meterrapikeys").GroupResource(), "")

// write patches the key's status with the versions' latest uses, where
// they moved (when usage is set), and its PreviousKeyInUse condition. It
// reads the key from the cache; the patch carries the resourceVersion, so
// it never overwrites a rotation it has not seen.
func (w *UsageWriter) write(ctx context.Context, k types.NamespacedName, ku *keyUse, now time.Time, withUsage bool) error {
	mak := &authv1alpha1.MeterrAPIKey{}
	if err := w.Client.Get(ctx, k, mak); err != nil {
		return err
	}
	if ku.uid != "" && string(mak.UID) != ku.uid {
		return errGone
	}
	orig := mak.DeepCopy()
	moved := withUsage && applyLastUsed(&mak.Status, ku.used)
	warn := w.warning(mak, ku, now)
	if warn != nil && !meta.IsStatusConditionTrue(mak.Status.Conditions, authv1alpha1.ConditionPreviousKeyInUse) {
		msg := "previous key version " + warn.ID + " is still in use; its overlap ends at " + warn.ExpiresAt.UTC().Format(time.RFC3339) +
			", and its callers then fail"
		setCondition(mak, authv1alpha1.ConditionPreviousKeyInUse, metav1.ConditionTrue, authv1alpha1.ReasonPreviousKeyStillInUse, msg)
		if w.Recorder != nil {
			w.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, authv1alpha1.ReasonPreviousKeyStillInUse, "Warn", "%s", msg)
		}
	} else if warn == nil && meta.IsStatusConditionTrue(mak.Status.Conditions, authv1alpha1.ConditionPreviousKeyInUse) {
		setCondition(mak, authv1alpha1.ConditionPreviousKeyInUse, metav1.ConditionFalse, authv1alpha1.ReasonPreviousKeyUnused,
			"no previous key version was used within the warning window before its overlap ends")
	}
	if warn != nil {
		w.warned[k] = true
	} else {
		delete(w.warned, k)
	}
	if equality.Semantic.DeepEqual(orig.Status, mak.Status) {
		return nil
	}
	if err := w.Client.Status().Patch(ctx, mak, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	if moved {
		lastUsedWrites.Inc()
	}
	return nil
}

// warning returns the previous version that makes the key
// PreviousKeyInUse at now, or nil: one used within the warning window
// while its overlap ends within that window. Its use is the latest the
// writer knows (ku) or the status holds.
func (w *UsageWriter) warning(mak *authv1alpha1.MeterrAPIKey, ku *keyUse, now time.Time) *authv1alpha1.PreviousKeyStatus {
	win := WarningWindow(w.WarningWindow, overlap(mak))
	for i := range mak.Status.PreviousKeys {
		p := &mak.Status.PreviousKeys[i]
		end := p.ExpiresAt.Time
		if !now.Before(end) || now.Before(end.Add(-win)) {
			continue
		}
		last := ku.used[p.ID]
		if p.LastUsedAt != nil && p.LastUsedAt.Unix() > last {
			last = p.LastUsedAt.Unix()
		}
		if last > 0 && now.Sub(usage.Time(last)) < win {
			return p
		}
	}
	return nil
}

// WarningWindow is --overlap-warning-window for a key whose overlap is
// overlap: flag when set, else the last tenth of the overlap, at most 24h.
func WarningWindow(flag, overlap time.Duration) time.Duration {
	if flag > 0 {
		return flag
	}
	return min(overlap/10, 24*time.Hour)
}

// applyLastUsed sets each listed version's lastUsedAt to its latest use
// where that is later; it reports whether anything moved.
func applyLastUsed(st *authv1alpha1.MeterrAPIKeyStatus, used map[string]int64) bool {
	moved := false
	set := func(id string, at **metav1.Time) {
		if sec, ok := used[id]; ok && sec > 0 && (*at == nil || (*at).Unix() < sec) {
			t := metav1.NewTime(usage.Time(sec))
			*at, moved = &t, true
		}
	}
	if c := st.CurrentKey; c != nil {
		set(c.ID, &c.LastUsedAt)
	}
	for i := range st.PreviousKeys {
		set(st.PreviousKeys[i].ID, &st.PreviousKeys[i].LastUsedAt)
	}
	return moved
}
