package webhookserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/internal/buildinfo"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/keepalive"
)

// serverMetrics are the hot path's metrics. The decision counters are
// resolved once per label value so counting allocates nothing. No label ever
// holds a key, a key hash or a key id.
type serverMetrics struct {
	decisions [authz.NumCodes]prometheus.Counter
	duration  prometheus.Histogram
	// decisionLogsDropped counts decision log lines over the rate limit.
	decisionLogsDropped prometheus.Counter
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meterr_auth_decisions_total",
		Help: `Decisions of /v1/auth/verify and /v1/auth/check, by outcome: "ok" or the error code of the answer.`,
	}, []string{"code"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meterr_auth_request_duration_seconds",
		Help:    "Time to decide a /v1/auth/verify or /v1/auth/check request, in seconds.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2.5, 12), // 10µs to about 240ms
	})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meterr_auth_decision_logs_dropped_total",
		Help: "Decision log lines (--log-decisions) not written because they came faster than the log's rate limit.",
	})
	for _, c := range []prometheus.Collector{decisions, duration, dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering auth server metrics: %w", err)
		}
	}
	m := &serverMetrics{duration: duration, decisionLogsDropped: dropped}
	for c := range authz.NumCodes {
		m.decisions[c] = decisions.WithLabelValues(c.String())
	}
	return m, nil
}

// newBuildInfo returns meterr_build_info{version,commit,goversion}, always 1
// (see buildinfo.New): version and commit are the ones main is stamped with.
func newBuildInfo(version, commit string) prometheus.Collector {
	return buildinfo.New(version, commit)
}

// registerTakeoverMetrics exports how many connections package keepalive
// has taken over from net/http (--keepalive-takeover).
func registerTakeoverMetrics(reg prometheus.Registerer, s *keepalive.Server) error {
	c := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meterr_auth_connections_taken_over_total",
		Help: "HTTP/1.1 keep-alive connections of the auth API served by the auth server's own loop after their first request (--keepalive-takeover).",
	}, func() float64 { return float64(s.TakenOver()) })
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("registering the takeover metric: %w", err)
	}
	return nil
}

// registerIndexMetrics exports the index's size and its hash conflicts. (The
// count of records that could not be used is package records'.)
func registerIndexMetrics(reg prometheus.Registerer, idx *index.Index) error {
	records := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meterr_auth_records_loaded",
		Help: "Key records in the auth server's index.",
	}, func() float64 { r, _ := idx.Len(); return float64(r) })
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meterr_auth_keys_loaded",
		Help: "Key versions in the auth server's index, tombstones included.",
	}, func() float64 { _, k := idx.Len(); return float64(k) })
	conflicts := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "meterr_auth_hash_conflicts_total",
		Help: "Times a key record was loaded with a key hash another record also claims; the record created first keeps the key.",
	}, func() float64 { return float64(idx.HashConflicts()) })
	for _, c := range []prometheus.Collector{records, keys, conflicts} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering index metrics: %w", err)
		}
	}
	return nil
}
