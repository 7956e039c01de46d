package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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
