package controllers

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

// keysIssued counts new keys by why they were issued: a first key, a
// scheduled or requested rotation, or the repair of drift. A rise in the
// drift reasons means someone edits what the operator manages.
var keysIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meterr_keys_issued_total",
	Help: "New API keys issued, by reason (KeyIssued, RotationDue, RotationRequested, SecretMissing, SecretModified, SecretRenamed).",
}, []string{"reason"})

// orphansDeleted counts key records deleted because their MeterrAPIKey was
// gone (see RecordReaper). Any rise means finalizers are being removed by hand.
var orphansDeleted = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "meterr_orphaned_records_deleted_total",
	Help: "Key records deleted because their MeterrAPIKey no longer exists (or exists with another UID).",
})

func init() {
	metrics.Registry.MustRegister(keysIssued, orphansDeleted)
}

// KeyStateCollector reports, on each scrape, how many MeterrAPIKeys are in
// each state and how long until their next rotation, from the manager's
// cache (no API request per scrape).
type KeyStateCollector struct {
	Reader client.Reader
	Clock  clock.PassiveClock
}

var (
	keysDesc = prometheus.NewDesc("meterr_keys",
		"MeterrAPIKeys by state: the Ready condition's reason (KeyReady, RotationDelayed, Disabled, Expired, SecretConflict, RecordsNamespace, ReconcileError), or Pending before the first reconcile.",
		[]string{"state"}, nil)
	untilRotationDesc = prometheus.NewDesc("meterr_key_rotation_due_seconds",
		"Time until each Ready MeterrAPIKey's next scheduled rotation (status.currentKey.rotatesAt).", nil, nil)
	// Buckets from an hour to a quarter: a rotation wave shows as a spike
	// in the low buckets. The first, 0, holds the keys whose rotation is
	// due now or overdue (the time is never negative): one that stays there
	// is a rotation that does not happen (the MeterrAPIKeyRotationOverdue
	// alert of the chart).
	rotationBuckets = []float64{0, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 60 * 86400, 90 * 86400, 180 * 86400}
	expiryDesc      = prometheus.NewDesc("meterr_key_expiry_seconds",
		"Time until spec.expiresAt of each MeterrAPIKey that has one and has not expired yet.", nil, nil)
	// A day, a week (the MeterrAPIKeyExpiringSoon alert), a month, a
	// quarter, a year.
	expiryBuckets = []float64{86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400}
)

// Describe implements prometheus.Collector.
func (c *KeyStateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- keysDesc
	ch <- untilRotationDesc
	ch <- expiryDesc
}

// Collect implements prometheus.Collector.
func (c *KeyStateCollector) Collect(ch chan<- prometheus.Metric) {
	list := &authv1alpha1.MeterrAPIKeyList{}
	// Read-only: no deep copy of every key on each scrape.
	if err := c.Reader.List(context.Background(), list, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(keysDesc, err)
		return
	}
	now := c.Clock.Now()
	states := map[string]float64{authv1alpha1.ReasonReady: 0, authv1alpha1.ReasonDisabled: 0, authv1alpha1.ReasonExpired: 0, authv1alpha1.ReasonSecretConflict: 0}
	buckets := make(map[float64]uint64, len(rotationBuckets))
	var count uint64
	var sum float64
	expiry := make(map[float64]uint64, len(expiryBuckets))
	// Every bucket, also an empty one, so that alerts on a bucket find a
	// series.
	for _, b := range rotationBuckets {
		buckets[b] = 0
	}
	for _, b := range expiryBuckets {
		expiry[b] = 0
	}
	var expiryCount uint64
	var expirySum float64
	for i := range list.Items {
		m := &list.Items[i]
		state := "Pending"
		if cond := meta.FindStatusCondition(m.Status.Conditions, authv1alpha1.ConditionReady); cond != nil {
			state = cond.Reason
		}
		states[state]++
		if e := m.Spec.ExpiresAt; e != nil && e.After(now) {
			d := e.Sub(now).Seconds()
			expiryCount++
			expirySum += d
			for _, b := range expiryBuckets {
				if d <= b {
					expiry[b]++
				}
			}
		}
		if k := m.Status.CurrentKey; k != nil && k.RotatesAt != nil && meta.IsStatusConditionTrue(m.Status.Conditions, authv1alpha1.ConditionReady) {
			d := max(k.RotatesAt.Sub(now).Seconds(), 0)
			count++
			sum += d
			for _, b := range rotationBuckets {
				if d <= b {
					buckets[b]++
				}
			}
		}
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, n, state)
	}
	ch <- prometheus.MustNewConstHistogram(untilRotationDesc, count, sum, buckets)
	ch <- prometheus.MustNewConstHistogram(expiryDesc, expiryCount, expirySum, expiry)
}
