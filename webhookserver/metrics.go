package webhookserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/internal/buildinfo"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/keepalive"
)

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
