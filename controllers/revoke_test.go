package controllers_test

import (
	"fmt"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/revocation"
)

// revoke files a revocation request for key with mak, as the CLI does.
func revoke(mak *authv1alpha1.MeterrAPIKey, key, source, location string) {
	GinkgoHelper()
	Expect(revocation.Submit(ctx, k8sClient, client.ObjectKeyFromObject(mak), apikey.HashOf(key), source, location)).To(Succeed())
}

// revokedIn reports whether the record marks the key's version revoked.
func revokedIn(mak *authv1alpha1.MeterrAPIKey, key string) bool {
	h := apikey.HashOf(key).String()
	for _, v := range readRecord(mak).Keys {
		if v.Hash == h {
			return v.Revoked != nil
		}
	}
	return false
}

func requestsPending(m *authv1alpha1.MeterrAPIKey) bool {
	for k := range m.Annotations {
		if strings.HasPrefix(k, authv1alpha1.AnnotationRevokePrefix) {
			return true
		}
	}
	return false
}

func compromised(id string) func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
	return func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
		g.Expect(slices.ContainsFunc(m.Status.CompromisedKeys, func(c authv1alpha1.CompromisedKeyStatus) bool { return c.ID == id })).
			To(BeTrue(), "status.compromisedKeys lists %s", id)
		g.Expect(requestsPending(m)).To(BeFalse(), "the request annotation is removed")
	}
}

func eventNotes(mak *authv1alpha1.MeterrAPIKey, reason string) []string {
	list := &eventsv1.EventList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(mak.Namespace))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == mak.Name && e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

var _ = Describe("revocation by the key itself", func() {
	It("refuses a revoked current key, replaces it at once without touching the spec, tells the owner, and is idempotent", func() {
		ns := newNamespace()
		mak := newKey(ns, "k")
		got := settled(mak, ready)
		gen := got.Generation
		leaked := secretKey(ns, "k")

		revoke(mak, leaked, "cli", "https://chat.example/msg/1")
		got = settled(mak, ready, notCurrentID(idOf(leaked)), compromised(idOf(leaked)))
		Expect(got.Generation).To(Equal(gen), "the spec is untouched")
		rec := readRecord(got)
		Expect(revokedIn(got, leaked)).To(BeTrue())
		Expect(accepted(rec, leaked, fakeClock.Now())).To(BeFalse(), "no overlap for a leaked key")
		fresh := secretKey(ns, "k")
		Expect(fresh).NotTo(Equal(leaked))
		Expect(accepted(rec, fresh, fakeClock.Now())).To(BeTrue())
		Expect(got.Status.CurrentKey.ID).To(Equal(idOf(fresh)))
		for _, p := range got.Status.PreviousKeys {
			Expect(p.ID).NotTo(Equal(idOf(leaked)), "a revoked key is not listed as still accepted")
		}
		c := got.Status.CompromisedKeys[0]
		Expect(c.Source).To(Equal("cli"))
		Expect(c.ReportedAt.IsZero()).To(BeFalse())
		Eventually(func() []string { return eventNotes(mak, authv1alpha1.ReasonKeyCompromised) }).Should(ContainElement(
			And(ContainSubstring(idOf(leaked)), ContainSubstring("https://chat.example/msg/1"), ContainSubstring("cli"), ContainSubstring(idOf(fresh)))))
		expectNowhere(ns, leaked, fresh)

		By("the same report again changes nothing but the event")
		revoke(mak, leaked, "cli", "https://chat.example/msg/1")
		Eventually(func(g Gomega) { g.Expect(requestsPending(getKey(mak))).To(BeFalse()) }).Should(Succeed())
		got = settled(mak, ready, currentID(idOf(fresh)))
		Expect(got.Generation).To(Equal(gen))
		Expect(got.Status.CompromisedKeys).To(HaveLen(1))
		Expect(secretKey(ns, "k")).To(Equal(fresh))
	})

	It("refuses a revoked previous key while the current one stays valid", func() {
		ns := newNamespace()
		mak := newKey(ns, "k")
		settled(mak, ready)
		old := secretKey(ns, "k")
		fakeClock.Step(time.Minute) // past the suite's minimum rotation interval
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		got := settled(mak, ready, notCurrentID(idOf(old)))
		cur := secretKey(ns, "k")
		Expect(got.Status.PreviousKeys).To(HaveLen(1))
		Expect(accepted(readRecord(got), old, fakeClock.Now())).To(BeTrue(), "in its overlap")

		revoke(mak, old, "github", "https://github.com/o/r/blob/main/x.env")
		got = settled(mak, ready, currentID(idOf(cur)), compromised(idOf(old)))
		rec := readRecord(got)
		Expect(accepted(rec, old, fakeClock.Now())).To(BeFalse())
		Expect(accepted(rec, cur, fakeClock.Now())).To(BeTrue())
		Expect(got.Status.PreviousKeys).To(BeEmpty())
		Expect(secretKey(ns, "k")).To(Equal(cur), "the current key is not replaced")
		Eventually(func() []string { return eventNotes(mak, authv1alpha1.ReasonKeyCompromised) }).Should(ContainElement(
			And(ContainSubstring(idOf(old)), ContainSubstring("previous"), ContainSubstring("x.env"))))
	})

	It("revokes even while the workload Secret is in conflict (nothing can be delivered)", func() {
		ns := newNamespace()
		mak := newKey(ns, "k")
		settled(mak, ready)
		leaked := secretKey(ns, "k")
		// Someone takes the workload Secret over: it is no longer the key's.
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "k"}, s)).To(Succeed())
		s.OwnerReferences = nil
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		settled(mak, readyReason(authv1alpha1.ReasonSecretConflict))

		revoke(mak, leaked, "cli", "")
		Eventually(func(g Gomega) { g.Expect(requestsPending(getKey(mak))).To(BeFalse()) }).Should(Succeed())
		Expect(revokedIn(mak, leaked)).To(BeTrue())
		Expect(accepted(readRecord(mak), leaked, fakeClock.Now())).To(BeFalse())
		Eventually(func() []string { return eventReasons(mak) }).Should(ContainElement(authv1alpha1.ReasonKeyCompromised))
		Eventually(func() []authv1alpha1.CompromisedKeyStatus { return getKey(mak).Status.CompromisedKeys }).
			Should(ContainElement(HaveField("ID", idOf(leaked))))
	})

	It("lets a tenant end only its own keys' validity, and never re-admits a revoked key", func() {
		nsA, nsB := newNamespace(), newNamespace()
		a := newKey(nsA, "a")
		b := newKey(nsB, "b")
		settled(a, ready)
		settled(b, ready)
		keyB := secretKey(nsB, "b")
		keyA := secretKey(nsA, "a")

		By("tenant A files a request naming B's key hash on its own key: nothing happens to B")
		revoke(a, keyB, "cli", "")
		Eventually(func() []string { return eventReasons(a) }).Should(ContainElement(authv1alpha1.ReasonRevocationIgnored))
		Eventually(func(g Gomega) { g.Expect(requestsPending(getKey(a))).To(BeFalse()) }).Should(Succeed())
		Expect(accepted(readRecord(b), keyB, fakeClock.Now())).To(BeTrue())
		Expect(secretKey(nsA, "a")).To(Equal(keyA))
		Expect(getKey(a).Status.CompromisedKeys).To(BeEmpty())

		By("a malformed request is dropped")
		update(a, func(m *authv1alpha1.MeterrAPIKey) {
			m.Annotations = map[string]string{authv1alpha1.AnnotationRevokePrefix + "x": "{not json"}
		})
		Eventually(func(g Gomega) { g.Expect(requestsPending(getKey(a))).To(BeFalse()) }).Should(Succeed())
		Expect(secretKey(nsA, "a")).To(Equal(keyA))

		By("revoking A's key, then erasing the status and putting the key back in the Secret")
		revoke(a, keyA, "cli", "")
		got := settled(a, ready, notCurrentID(idOf(keyA)), compromised(idOf(keyA)))
		patch := client.MergeFrom(got.DeepCopy())
		got.Status.CompromisedKeys = nil
		got.Status.CurrentKey.ID = idOf(keyA)
		Expect(k8sClient.Status().Patch(ctx, got, patch)).To(Succeed())
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: nsA, Name: "a"}, s)).To(Succeed())
		s.Data[authv1alpha1.DataKeyAPIKey] = []byte(keyA)
		s.Data[authv1alpha1.DataKeyEnv] = []byte(keyA)
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		Eventually(func() string { return secretKey(nsA, "a") }).ShouldNot(Equal(keyA), "the reported key is replaced again")
		got = settled(a, ready, notCurrentID(idOf(keyA)), compromised(idOf(keyA)))
		Expect(accepted(readRecord(got), keyA, fakeClock.Now())).To(BeFalse(), "the record, not the status, is the source of truth")
		Expect(revokedIn(got, keyA)).To(BeTrue())
	})
})

var _ = Describe("revocation under faults", func() {
	reconcileWith := func(fc *faultyClient, mak *authv1alpha1.MeterrAPIKey) error {
		r := &controllers.MeterrAPIKeyReconciler{
			Client: fc, APIReader: k8sClient, Clock: fakeClock,
			Recorder: events.NewFakeRecorder(100),
			Options:  controllers.Options{RecordsNamespace: recordsNamespace, TombstoneRetention: retention},
		}
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mak)})
		return err
	}
	converge := func(delivered *[]string, mak *authv1alpha1.MeterrAPIKey) {
		for range 3 {
			Expect(reconcileWith(&faultyClient{Client: k8sClient, delivered: delivered}, mak)).To(Succeed())
		}
	}
	prepare := func(delivered *[]string) (string, *authv1alpha1.MeterrAPIKey, string) {
		ns := newNamespace()
		mak := newKey(ns, "k", func(m *authv1alpha1.MeterrAPIKey) { m.Labels = map[string]string{manualLabel: "true"} })
		converge(delivered, mak)
		leaked := secretKey(ns, "k")
		revoke(mak, leaked, "gitlab", "https://gitlab.example/p/-/blob/main/ci.yml")
		return ns, mak, leaked
	}

	It("never accepts the reported key again and still replaces it when any write fails (the manager crashing between refusal and replacement)", func() {
		var clean []string
		_, mak, _ := prepare(&clean)
		counter := &faultyClient{Client: k8sClient, delivered: &clean}
		Expect(reconcileWith(counter, mak)).To(Succeed())
		n := counter.writes
		Expect(n).To(BeNumerically(">=", 3), "record (refusal), record+Secret (replacement), annotation, status")

		for failAt := 1; failAt <= n; failAt++ {
			for _, after := range []bool{false, true} {
				var delivered []string
				ns, mak, leaked := prepare(&delivered)
				fc := &faultyClient{Client: k8sClient, delivered: &delivered, failAt: failAt, after: after}
				Expect(reconcileWith(fc, mak)).NotTo(Succeed(), "write %d (after=%v) was not reached", failAt, after)
				when := fmt.Sprintf("write %d (after=%v)", failAt, after)
				if failAt > 1 || after {
					Expect(accepted(readRecord(mak), leaked, fakeClock.Now())).To(BeFalse(), "%s: the refusal is the first write", when)
				}
				converge(&delivered, mak)
				got := getKey(mak)
				rec := readRecord(got)
				Expect(accepted(rec, leaked, fakeClock.Now())).To(BeFalse(), "%s: the reported key is refused after recovery", when)
				cur := secretKey(ns, "k")
				Expect(cur).NotTo(Equal(leaked), "%s: the owner has a new key", when)
				Expect(accepted(rec, cur, fakeClock.Now())).To(BeTrue(), "%s: the new key is accepted", when)
				Expect(got.Status.CurrentKey.ID).To(Equal(idOf(cur)))
				Expect(got.Status.CompromisedKeys).To(ContainElement(HaveField("ID", idOf(leaked))), when)
				Expect(requestsPending(got)).To(BeFalse(), when)
				for _, k := range delivered {
					if k != leaked {
						Expect(accepted(rec, k, fakeClock.Now())).To(BeTrue(), "%s: a delivered key (id %s) stays accepted", when, idOf(k))
					}
				}
			}
		}
	})
})
