package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

// kstatus is what Argo CD, Flux and `kubectl wait --for=jsonpath` users
// compute from a resource's conditions.
func kstatusOf(m *authv1alpha1.MeterrAPIKey) status.Status {
	m = m.DeepCopy()
	m.SetGroupVersionKind(authv1alpha1.GroupVersion.WithKind("MeterrAPIKey"))
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m)
	Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	Expect(err).NotTo(HaveOccurred())
	return res.Status
}

var _ = Describe("kstatus of a MeterrAPIKey", func() {
	It("is InProgress while issuing, Current when Ready, Failed on SecretConflict", func() {
		ns := newNamespace()
		// A new key as the API server returns it before the operator has
		// written anything (the suite's manager leaves manual keys alone):
		// the CRD's default status.observedGeneration 0 makes it InProgress.
		fresh := &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fresh", Labels: map[string]string{manualLabel: "true"}},
			Spec: authv1alpha1.MeterrAPIKeySpec{Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead}}}
		Expect(k8sClient.Create(ctx, fresh)).To(Succeed())
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(authv1alpha1.GroupVersion.WithKind("MeterrAPIKey"))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(fresh), u)).To(Succeed())
		og, found, err := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(BeTrue(), "status.observedGeneration is defaulted")
		Expect(og).To(BeZero())
		res, err := status.Compute(u)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Status).To(Equal(status.InProgressStatus), "still issuing")

		mak := newKey(ns, "k")
		Expect(kstatusOf(settled(mak, ready))).To(Equal(status.CurrentStatus))

		// A spec change not yet observed is InProgress.
		pending := getKey(mak)
		pending.Generation++
		Expect(kstatusOf(pending)).To(Equal(status.InProgressStatus))

		// Disabled keeps Ready=False (DESIGN.md's contract), which kstatus's
		// fallback on Ready reads as InProgress, never Failed; the Argo CD
		// health check (docs/argocd/health.lua) calls it Suspended.
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true })
		Expect(kstatusOf(settled(mak, readyReason(authv1alpha1.ReasonDisabled)))).To(Equal(status.InProgressStatus))
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = false })
		Expect(kstatusOf(settled(mak, ready))).To(Equal(status.CurrentStatus))

		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}})).To(Succeed())
		conflict := newKey(ns, "taken")
		Expect(kstatusOf(settled(conflict, readyReason(authv1alpha1.ReasonSecretConflict)))).To(Equal(status.FailedStatus))

		// A reconcile error is InProgress: the operator retries.
		retrying := getKey(mak)
		retrying.Status.Conditions = nil
		retrying.Status.Conditions = append(retrying.Status.Conditions,
			metav1.Condition{Type: authv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: authv1alpha1.ReasonReconcileError},
			metav1.Condition{Type: authv1alpha1.ConditionReconciling, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonReconcileError})
		Expect(kstatusOf(retrying)).To(Equal(status.InProgressStatus))
	})
})
