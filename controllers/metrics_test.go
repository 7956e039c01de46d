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
		if reason != "" {
			m.Status.Conditions = []metav1.Condition{{Type: authv1alpha1.ConditionReady, Status: ready, Reason: reason}}
		}
		if rotatesIn > 0 {
			at := metav1.NewTime(now.Add(rotatesIn))
			m.Status.CurrentKey = &authv1alpha1.CurrentKeyStatus{RotatesAt: &at}
		}
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
	).Build()
	col := &KeyStateCollector{Reader: c, Clock: clocktesting.NewFakePassiveClock(now)}
	want := `
# HELP meterr_keys MeterrAPIKeys by state: the Ready condition's reason (KeyReady, RotationDelayed, Disabled, Expired, SecretConflict, RecordsNamespace, ReconcileError), or Pending before the first reconcile.
# TYPE meterr_keys gauge
meterr_keys{state="Disabled"} 1
meterr_keys{state="Expired"} 0
meterr_keys{state="KeyReady"} 2
meterr_keys{state="Pending"} 1
meterr_keys{state="SecretConflict"} 1
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "meterr_keys"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(col, "meterr_key_rotation_due_seconds"); n != 1 {
		t.Fatalf("rotation histogram: %d series, want 1", n)
	}
}
