package controllers_test

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// These specs play a hostile or careless tenant: it controls its own
// namespace's MeterrAPIKeys and Secrets, data and ownerReferences included.
var _ = Describe("tenant isolation", func() {
	recordOf := func(mak *authv1alpha1.MeterrAPIKey) (*record.Record, bool) {
		s := &corev1.Secret{}
		err := k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace,
			Name: record.Name(mak.Namespace, mak.Name, mak.UID)}, s)
		if apierrors.IsNotFound(err) {
			return nil, false
		}
		Expect(err).NotTo(HaveOccurred())
		rec, err := record.Decode(s)
		Expect(err).NotTo(HaveOccurred())
		return rec, true
	}
	holds := func(rec *record.Record, key string) bool {
		h := apikey.HashOf(key).String()
		for _, v := range rec.Keys {
			if v.Hash == h {
				return true
			}
		}
		return false
	}
	// everyRecordHolding lists the records that hold a key's hash.
	everyRecordHolding := func(key string) []string {
		list := &corev1.SecretList{}
		Expect(k8sClient.List(ctx, list, client.InNamespace(recordsNamespace), client.MatchingLabels{authv1alpha1.LabelRecord: "true"})).To(Succeed())
		var out []string
		for i := range list.Items {
			if rec, err := record.Decode(&list.Items[i]); err == nil && holds(rec, key) {
				out = append(out, rec.Owner.String())
			}
		}
		return out
	}

	It("never records a key learnt from another namespace: the adoption attack", func() {
		victimNS, attackerNS := newNamespace(), newNamespace()
		victim := newKey(victimNS, "billing", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Restrictions = &authv1alpha1.Restrictions{IPAllowlist: []authv1alpha1.IPOrCIDR{"10.0.0.0/8"}}
		})
		victim = settled(victim, ready)
		learnt := secretKey(victimNS, "billing")
		victimRec := readRecord(victim)

		// The attacker's Secret exists first, so its key is in conflict...
		loot := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: attackerNS, Name: "loot"},
			Data: map[string][]byte{"x": []byte("y")}}
		Expect(k8sClient.Create(ctx, loot)).To(Succeed())
		squatter := newKey(attackerNS, "squatter", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Permissions = []authv1alpha1.Permission{authv1alpha1.PermissionAdmin}
			m.Spec.RateLimit.Tier = authv1alpha1.TierEnterprise
			m.Spec.SecretName = "loot"
		})
		squatter = settled(squatter, readyReason(authv1alpha1.ReasonSecretConflict))

		// ...then it hands the Secret to its key, holding the learnt key.
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(loot), loot)).To(Succeed())
		t := true
		loot.OwnerReferences = []metav1.OwnerReference{{APIVersion: authv1alpha1.GroupVersion.String(), Kind: "MeterrAPIKey",
			Name: squatter.Name, UID: squatter.UID, Controller: &t}}
		loot.Data = map[string][]byte{authv1alpha1.DataKeyAPIKey: []byte(learnt), authv1alpha1.DataKeyEnv: []byte(learnt)}
		loot.Labels = map[string]string{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue}
		loot.Annotations = map[string]string{authv1alpha1.AnnotationKeyID: idOf(learnt),
			authv1alpha1.AnnotationIssuedAt: "2020-01-01T00:00:00Z"}
		Expect(k8sClient.Update(ctx, loot)).To(Succeed())
		poke(squatter)

		// The squatter gets a key of its own; the learnt one never enters
		// its record, and it is gone from the squatter's Secret.
		squatter = settled(squatter, ready, notCurrentID(idOf(learnt)))
		Eventually(func(g Gomega) {
			g.Expect(secretKey(attackerNS, "loot") == learnt).To(BeFalse(), "the learnt key is replaced in the squatter's Secret")
		}).Should(Succeed())
		rec, ok := recordOf(squatter)
		Expect(ok).To(BeTrue())
		Expect(holds(rec, learnt)).To(BeFalse(), "the squatter's record holds the learnt key's hash")
		Expect(everyRecordHolding(learnt)).To(Equal([]string{victimNS + "/billing"}))
		Eventually(func() []string { return eventReasons(squatter) }).Should(ContainElement(authv1alpha1.ReasonSecretModified))

		// The victim's record is as it was: policy, owner, versions.
		Expect(readRecord(getKey(victim))).To(Equal(victimRec))

		// Disabling, then deleting the squatter changes nothing for the victim.
		update(squatter, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true })
		settled(squatter, readyReason(authv1alpha1.ReasonDisabled))
		Expect(k8sClient.Delete(ctx, squatter)).To(Succeed())
		Eventually(func() bool {
			_, ok := recordOf(squatter)
			return ok
		}).Should(BeFalse())
		Expect(readRecord(getKey(victim))).To(Equal(victimRec))
		Expect(accepted(readRecord(getKey(victim)), learnt, fakeClock.Now())).To(BeTrue())
		expectNowhere(attackerNS, learnt)
	})

	It("rebuilds a deleted record only from the key its own status names", func() {
		ns := newNamespace()
		mak := newKey(ns, "rebuild")
		got := settled(mak, ready)
		own := secretKey(ns, "rebuild")
		other := newKey(ns, "other")
		settled(other, ready)
		foreignKey := secretKey(ns, "other")

		// Swap another key into the Secret and delete the record together:
		// the record is rebuilt with a fresh key, not with the swapped one.
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "rebuild"}, s)).To(Succeed())
		s.Data[authv1alpha1.DataKeyAPIKey], s.Data[authv1alpha1.DataKeyEnv] = []byte(foreignKey), []byte(foreignKey)
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: recordsNamespace,
			Name: record.Name(ns, "rebuild", got.UID)}})).To(Succeed())
		got = settled(mak, ready, notCurrentID(idOf(own)), notCurrentID(idOf(foreignKey)))
		rec := readRecord(got)
		Expect(holds(rec, foreignKey)).To(BeFalse())
		Expect(everyRecordHolding(foreignKey)).To(Equal([]string{ns + "/other"}))
		Expect(accepted(rec, secretKey(ns, "rebuild"), fakeClock.Now())).To(BeTrue())
	})

	Context("orphaned records", func() {
		It("deletes a record whose MeterrAPIKey went without its finalizer while the manager was away, never the workload Secret", func() {
			ns := newNamespace()
			// The suite's manager ignores keys labelled manual: for this key
			// it is as if stopped. Issue the key by hand, as it would have.
			mak := newKey(ns, "orphan", func(m *authv1alpha1.MeterrAPIKey) { m.Labels = map[string]string{manualLabel: "true"} })
			byHand := &controllers.MeterrAPIKeyReconciler{Client: k8sClient, APIReader: k8sClient, Clock: fakeClock,
				Recorder: events.NewFakeRecorder(100),
				Options:  controllers.Options{RecordsNamespace: recordsNamespace, TombstoneRetention: retention}}
			for range 2 {
				_, err := byHand.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mak)})
				Expect(err).NotTo(HaveOccurred())
			}
			got := getKey(mak)
			_, ok := recordOf(got)
			Expect(ok).To(BeTrue())
			Expect(got.Finalizers).To(ContainElement(authv1alpha1.Finalizer))

			// Someone removes the finalizer by hand, and the key goes.
			patch := client.MergeFrom(got.DeepCopy())
			got.Finalizers = nil
			Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
			Expect(k8sClient.Delete(ctx, got)).To(Succeed())
			Eventually(func() bool {
				_, ok := recordOf(got)
				return ok
			}).Should(BeFalse(), "the orphaned record is deleted")
			// envtest runs no garbage collector: the Secret is still there,
			// and the reaper did not touch it.
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orphan"}, &corev1.Secret{})).To(Succeed())
		})

		It("deletes records left behind while the manager was down: no owner, or an owner with another UID", func() {
			ns := newNamespace()
			// What a resource deleted while the manager was stopped leaves:
			// a record whose owner does not exist.
			gone := orphanRecord(ns, "gone", "00000000-0000-0000-0000-000000000001")
			// And one for an earlier resource of a name that exists now.
			mak := newKey(ns, "reborn")
			live := settled(mak, ready)
			stale := orphanRecord(ns, "reborn", "00000000-0000-0000-0000-000000000002")
			for _, name := range []string{gone, stale} {
				Eventually(func() bool {
					return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace, Name: name}, &corev1.Secret{}))
				}).Should(BeTrue(), "record %s is deleted", name)
			}
			Consistently(func() bool {
				_, ok := recordOf(live)
				return ok
			}).WithTimeout(2*time.Second).Should(BeTrue(), "the live key's record stays")
		})
	})

	It("keeps the manager's heap flat while large labelled foreign Secrets appear", func() {
		ns := newNamespace()
		heap := func() uint64 {
			runtime.GC()
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m.HeapAlloc
		}
		before := heap()
		blob := bytes.Repeat([]byte("x"), 900<<10)
		for i := range 40 {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("big-%d", i),
				Labels: map[string]string{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue}},
				Data: map[string][]byte{"blob": blob}}
			Expect(k8sClient.Create(ctx, s)).To(Succeed())
		}
		// The manager has seen them all once its cache lists them.
		Eventually(func(g Gomega) {
			list := &metav1.PartialObjectMetadataList{}
			list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
			g.Expect(mgrClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(40))
		}).Should(Succeed())
		grown := int64(heap()) - int64(before)
		Expect(grown).To(BeNumerically("<", 8<<20), "the heap grew by %d MiB for 36 MiB of foreign Secret data", grown>>20)
	})

	It("caps a record's versions and delays rotations requested faster than the minimum interval", func() {
		ns := newNamespace()
		mak := newKey(ns, "churn", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Overlap = &metav1.Duration{Duration: 0}
		})
		got := settled(mak, ready)
		first := got.Status.CurrentKey.ID

		// A rotation requested right away waits for the interval, and says until when.
		fakeClock.Step(time.Second)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		until := got.Status.CurrentKey.IssuedAt.Add(minRotationInterval).UTC().Format(time.RFC3339)
		got = settled(mak, currentID(first), readyReason(authv1alpha1.ReasonRotationDelayed))
		c := meta.FindStatusCondition(got.Status.Conditions, authv1alpha1.ConditionReady)
		Expect(c.Status).To(Equal(metav1.ConditionTrue), "a delayed rotation leaves the key usable")
		Expect(c.Message).To(ContainSubstring(until))
		fakeClock.Step(minRotationInterval)
		poke(mak)
		settled(mak, ready, notCurrentID(first), readyReason(authv1alpha1.ReasonReady))

		// A rotation loop: every version it leaves is a tombstone, and the
		// record never holds more than the cap.
		for range controllers.MaxVersions + 4 {
			fakeClock.Step(minRotationInterval)
			prev := getKey(mak).Status.CurrentKey.ID
			at := metav1.NewTime(fakeClock.Now())
			update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
			settled(mak, notCurrentID(prev))
		}
		rec := readRecord(getKey(mak))
		Expect(len(rec.Keys)).To(Equal(controllers.MaxVersions))
		Expect(rec.Keys[len(rec.Keys)-1].ExpiresAt).To(BeNil(), "the current key is kept")
		Expect(rec.Keys[0].NotBefore.Time).To(BeTemporally(">", got.Status.CurrentKey.IssuedAt.Time), "the oldest tombstones went first")
	})

	It("stops rotations while too many versions still work, until the oldest overlap ends", func() {
		ns := newNamespace()
		mak := newKey(ns, "overlapping", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Overlap = &metav1.Duration{Duration: 24 * time.Hour}
		})
		settled(mak, ready)
		for range controllers.MaxLiveVersions - 1 {
			fakeClock.Step(minRotationInterval)
			prev := getKey(mak).Status.CurrentKey.ID
			at := metav1.NewTime(fakeClock.Now())
			update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
			settled(mak, notCurrentID(prev))
		}
		got := getKey(mak)
		Expect(got.Status.PreviousKeys).To(HaveLen(controllers.MaxLiveVersions - 1))
		fakeClock.Step(minRotationInterval)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		got = settled(mak, currentID(got.Status.CurrentKey.ID), readyReason(authv1alpha1.ReasonRotationDelayed))
		c := meta.FindStatusCondition(got.Status.Conditions, authv1alpha1.ConditionReady)
		Expect(c.Message).To(ContainSubstring(got.Status.PreviousKeys[0].ExpiresAt.UTC().Format(time.RFC3339)))
		fakeClock.SetTime(got.Status.PreviousKeys[0].ExpiresAt.Time)
		poke(mak)
		settled(mak, ready, notCurrentID(got.Status.CurrentKey.ID))
	})

	It("never issues a MeterrAPIKey in the records namespace, and says why", func() {
		mak := newKey(recordsNamespace, "sneaky")
		got := settled(mak, readyReason(authv1alpha1.ReasonRecordsNamespace))
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, authv1alpha1.ConditionStalled)).To(BeTrue())
		Expect(got.Status.CurrentKey).To(BeNil())
		Expect(got.Finalizers).To(BeEmpty())
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace, Name: "sneaky"}, &corev1.Secret{}))
		}).WithTimeout(2*time.Second).Should(BeTrue(), "no workload Secret in the records namespace")
		_, ok := recordOf(got)
		Expect(ok).To(BeFalse(), "no record")
		Expect(k8sClient.Delete(ctx, got)).To(Succeed())
	})

	It("refuses the operator's own label and annotation keys in secretTemplate, naming the key", func() {
		ns := newNamespace()
		for _, tc := range []struct {
			tmpl authv1alpha1.SecretTemplate
			want string
		}{
			{authv1alpha1.SecretTemplate{Labels: map[string]string{authv1alpha1.LabelRecord: "true"}}, "label key " + authv1alpha1.LabelRecord + " is reserved"},
			{authv1alpha1.SecretTemplate{Labels: map[string]string{authv1alpha1.LabelManagedBy: "me"}}, "label key " + authv1alpha1.LabelManagedBy + " is reserved"},
			{authv1alpha1.SecretTemplate{Annotations: map[string]string{authv1alpha1.AnnotationKeyID: "x"}}, "annotation key " + authv1alpha1.AnnotationKeyID + " is reserved"},
		} {
			mak := &authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reserved"},
				Spec: authv1alpha1.MeterrAPIKeySpec{Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead}, SecretTemplate: &tc.tmpl}}
			err := k8sClient.Create(ctx, mak)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want a refusal, got %v", err)
			Expect(err.Error()).To(ContainSubstring(tc.want))
			Expect(strings.Contains(err.Error(), "spec.secretTemplate")).To(BeTrue(), "the message names the field: %v", err)
		}
	})
})

// orphanRecord writes a record, as the manager would, for a MeterrAPIKey
// that does not exist (with this UID), and returns its name.
func orphanRecord(ns, name, uid string) string {
	key, err := apikey.Generate(apikey.EnvProduction)
	Expect(err).NotTo(HaveOccurred())
	owner := record.Owner{Namespace: ns, Name: name, UID: types.UID(uid)}
	data, err := record.Encode(&record.Record{Owner: owner, Policy: record.Policy{Permissions: []string{"admin"}, Environment: "production"},
		Keys: []record.Version{record.NewVersion(key, fakeClock.Now())}})
	Expect(err).NotTo(HaveOccurred())
	recName := record.Name(ns, name, owner.UID)
	Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: recordsNamespace, Name: recName,
		Labels: record.Labels(), Annotations: map[string]string{authv1alpha1.AnnotationOwner: owner.String()}},
		Data: map[string][]byte{record.DataKey: data}})).To(Succeed())
	return recName
}
