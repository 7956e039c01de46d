package answer

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// metrics are the hot path's metrics. The decision counters are
// resolved once per label value so counting allocates nothing. No label ever
// holds a key, a key hash or a key id.
type metrics struct {
	decisions [authz.NumCodes]prometheus.Counter
	duration  prometheus.Histogram
	// decisionLogsDropped counts decision log lines over the rate limit.
	decisionLogsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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
	m := &metrics{duration: duration, decisionLogsDropped: dropped}
	for c := range authz.NumCodes {
		m.decisions[c] = decisions.WithLabelValues(c.String())
	}
	return m, nil
}

// observe counts the decision of a and its duration since now, and with
// --log-decisions writes its line (Core.logDecision): once per decision,
// the same for every front-end. in is what the decision read, looked
// whether it looked the key up.
func (s *Core) observe(req *request.Request, a *Answer, in *authz.Input, looked bool, now time.Time) {
	s.metrics.decisions[a.Code].Inc()
	s.metrics.duration.Observe(s.clock.Since(now).Seconds())
	if s.dlog != nil {
		s.logDecision(req, a, in, looked)
	}
}
