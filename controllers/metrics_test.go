package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

func TestKeyStateCollector(t *testing.T) {
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	key := func(name, reason string, ready metav1.ConditionStatus, rotatesIn time.Duration) *authv1alpha1.MeterrAPIKey {
		m := &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name}}
		if rotatesIn < 0 { // overdue
			at := metav1.NewTime(now.Add(rotatesIn))
			m.Status.CurrentKey = &authv1alpha1.CurrentKeyStatus{RotatesAt: &at}
		}
		if reason != "" {
			m.Status.Conditions = []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: ready, Reason: reason}}
		}
		if rotatesIn > 0 {
			at := metav1.NewTime(now.Add(rotatesIn))
			m.Status.CurrentKey = &authv1alpha1.CurrentKeyStatus{RotatesAt: &at}
		}
		return m
	}
	expiring := func(name string, in time.Duration) *authv1alpha1.MeterrAPIKey {
		m := key(name, "", "", 0)
		at := metav1.NewTime(now.Add(in))
		m.Spec.ExpiresAt = &at
		return m
	}
	scheme := runtime.NewScheme()
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		key("a", authv1alpha1.ReasonReady, metav1.ConditionTrue, 2*time.Hour),
		key("b", authv1alpha1.ReasonReady, metav1.ConditionTrue, 60*24*time.Hour),
		key("c", authv1alpha1.ReasonDisabled, metav1.ConditionFalse, 0),
		key("d", authv1alpha1.ReasonSecretConflict, metav1.ConditionFalse, 0),
		key("e", "", "", 0),
		key("f", authv1alpha1.ReasonReady, metav1.ConditionTrue, -time.Hour),
		expiring("g", 3*24*time.Hour), expiring("h", 20*24*time.Hour), expiring("i", -time.Hour),
	).Build()
	col := &KeyStateCollector{Reader: c, Clock: clocktesting.NewFakePassiveClock(now)}
	want := `
# HELP meterr_keys MeterrAPIKeys by state: the Ready condition's reason (KeyReady, RotationDelayed, Disabled, Expired, SecretConflict, RecordsNamespace, ReconcileError), or Pending before the first reconcile.
# TYPE meterr_keys gauge
meterr_keys{state="Disabled"} 1
meterr_keys{state="Expired"} 0
meterr_keys{state="KeyReady"} 3
meterr_keys{state="Pending"} 4
meterr_keys{state="SecretConflict"} 1
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "meterr_keys"); err != nil {
		t.Fatal(err)
	}
	// The overdue key (f) is in the 0 bucket; a and b are not.
	want = `
# HELP meterr_key_rotation_due_seconds Time until each Ready MeterrAPIKey's next scheduled rotation (status.currentKey.rotatesAt).
# TYPE meterr_key_rotation_due_seconds histogram
meterr_key_rotation_due_seconds_bucket{le="0"} 1
meterr_key_rotation_due_seconds_bucket{le="3600"} 1
meterr_key_rotation_due_seconds_bucket{le="21600"} 2
meterr_key_rotation_due_seconds_bucket{le="86400"} 2
meterr_key_rotation_due_seconds_bucket{le="604800"} 2
meterr_key_rotation_due_seconds_bucket{le="2.592e+06"} 2
meterr_key_rotation_due_seconds_bucket{le="5.184e+06"} 3
meterr_key_rotation_due_seconds_bucket{le="7.776e+06"} 3
meterr_key_rotation_due_seconds_bucket{le="1.5552e+07"} 3
meterr_key_rotation_due_seconds_bucket{le="+Inf"} 3
meterr_key_rotation_due_seconds_sum 5.1912e+06
meterr_key_rotation_due_seconds_count 3
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "meterr_key_rotation_due_seconds"); err != nil {
		t.Fatal(err)
	}
	// g expires within a week, h within a month; i has expired and is not
	// counted.
	want = `
# HELP meterr_key_expiry_seconds Time until spec.expiresAt of each MeterrAPIKey that has one and has not expired yet.
# TYPE meterr_key_expiry_seconds histogram
meterr_key_expiry_seconds_bucket{le="86400"} 0
meterr_key_expiry_seconds_bucket{le="604800"} 1
meterr_key_expiry_seconds_bucket{le="2.592e+06"} 2
meterr_key_expiry_seconds_bucket{le="7.776e+06"} 2
meterr_key_expiry_seconds_bucket{le="3.1536e+07"} 2
meterr_key_expiry_seconds_bucket{le="+Inf"} 2
meterr_key_expiry_seconds_sum 1.9872e+06
meterr_key_expiry_seconds_count 2
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "meterr_key_expiry_seconds"); err != nil {
		t.Fatal(err)
	}
}
