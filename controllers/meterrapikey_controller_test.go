package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

var _ = Describe("MeterrAPIKey lifecycle", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("issues a key: record first, then the workload Secret, then status and an event", func() {
		mak := newKey(ns, "billing", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Permissions = []authv1alpha1.Permission{authv1alpha1.PermissionRead, authv1alpha1.PermissionWrite}
			m.Spec.Environment = authv1alpha1.EnvironmentStaging
		})
		got := settled(mak, ready)
		key := secretKey(ns, "billing")
		Expect(key[:len(apikey.TestPrefix)]).To(Equal(apikey.TestPrefix))

		Expect(got.Status.CurrentKey.ID).To(Equal(idOf(key)))
		Expect(got.Status.CurrentKey.Hint).To(Equal(apikey.Hint(key)))
		Expect(got.Status.CurrentKey.RotatesAt.Time).To(BeTemporally("==", got.Status.CurrentKey.IssuedAt.Add(2160*time.Hour)))
		Expect(got.Status.SecretName).To(Equal("billing"))
		Expect(got.Status.PreviousKeys).To(BeEmpty())
		Expect(got.Finalizers).To(ContainElement(authv1alpha1.Finalizer))

		rec := readRecord(got)
		Expect(accepted(rec, key, fakeClock.Now())).To(BeTrue())
		Expect(rec.Owner).To(Equal(record.Owner{Namespace: ns, Name: "billing", UID: got.UID}))
		Expect(rec.Policy.Permissions).To(Equal([]string{"read", "write"}))
		Expect(rec.Policy.Environment).To(Equal("staging"))
		Expect(rec.Policy.RequestsPerHour).To(Equal(int64(1000)))

		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "billing"}, s)).To(Succeed())
		Expect(metav1.IsControlledBy(s, got)).To(BeTrue(), "the workload Secret carries a controller owner reference for garbage collection")
		Expect(s.Labels).To(HaveKeyWithValue(authv1alpha1.LabelManagedBy, authv1alpha1.ManagedByValue))
		Expect(s.Annotations).To(HaveKeyWithValue(authv1alpha1.AnnotationKeyID, idOf(key)))

		Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonIssued))
		expectNowhere(ns, key)
	})

	It("rotates at issuedAt + period, keeps the previous key for the overlap, then tombstones and forgets it", func() {
		mak := newKey(ns, "rotating", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Period = &metav1.Duration{Duration: 10 * time.Hour}
			m.Spec.Rotation.Overlap = &metav1.Duration{Duration: 2 * time.Hour}
		})
		first := settled(mak, ready)
		oldKey := secretKey(ns, "rotating")

		fakeClock.Step(10*time.Hour - time.Second)
		poke(mak)
		// A poke changes no generation, so settled() would already hold
		// before the reconcile runs: watch that no rotation happens instead.
		Consistently(func() string { return getKey(mak).Status.CurrentKey.ID }).WithTimeout(2 * time.Second).
			Should(Equal(idOf(oldKey)))
		Expect(secretKey(ns, "rotating")).To(Equal(oldKey), "no rotation before the period has elapsed")

		fakeClock.Step(time.Second)
		poke(mak)
		got := settled(mak, notCurrentID(idOf(oldKey)))
		newKey := secretKey(ns, "rotating")
		Expect(newKey).NotTo(Equal(oldKey))
		Expect(got.Status.CurrentKey.IssuedAt.Time).To(BeTemporally("==", fakeClock.Now()))
		Expect(got.Status.PreviousKeys).To(HaveLen(1))
		Expect(got.Status.PreviousKeys[0].ID).To(Equal(first.Status.CurrentKey.ID))
		Expect(got.Status.PreviousKeys[0].ExpiresAt.Time).To(BeTemporally("==", fakeClock.Now().Add(2*time.Hour)))
		rec := readRecord(got)
		Expect(accepted(rec, oldKey, fakeClock.Now())).To(BeTrue(), "the previous key works during the overlap")
		Expect(accepted(rec, newKey, fakeClock.Now())).To(BeTrue())
		Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonRotationDue))

		fakeClock.Step(2 * time.Hour)
		poke(mak)
		got = settled(mak, func(g Gomega, m *authv1alpha1.MeterrAPIKey) { g.Expect(m.Status.PreviousKeys).To(BeEmpty()) })
		rec = readRecord(got)
		Expect(tombstoned(rec, oldKey, fakeClock.Now())).To(BeTrue(), "an ended overlap leaves a tombstone")
		Expect(accepted(rec, newKey, fakeClock.Now())).To(BeTrue())

		fakeClock.Step(retention)
		poke(mak)
		Eventually(func() bool {
			rec := readRecord(got)
			return accepted(rec, oldKey, fakeClock.Now()) || tombstoned(rec, oldKey, fakeClock.Now())
		}).Should(BeFalse(), "tombstones go after the retention period")
		expectNowhere(ns, oldKey, newKey)
	})

	It("rotates exactly once per rotation.requestedAt value, never on re-apply, and waits for a future value", func() {
		mak := newKey(ns, "gitops")
		settled(mak, ready)
		k1 := secretKey(ns, "gitops")

		fakeClock.Step(time.Minute)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		got := settled(mak, notCurrentID(idOf(k1)))
		k2 := secretKey(ns, "gitops")
		Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonRotationRequested))

		// Re-applying the same manifest, or changing something else, keeps k2.
		fakeClock.Step(time.Minute)
		update(mak, func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Permissions = append(m.Spec.Permissions, authv1alpha1.PermissionWrite)
		})
		settled(mak, currentID(idOf(k2)))
		poke(mak)
		Consistently(func() string { return getKey(mak).Status.CurrentKey.ID }).WithTimeout(2*time.Second).
			Should(Equal(idOf(k2)), "a poke with an already-used requestedAt never rotates")
		Expect(secretKey(ns, "gitops")).To(Equal(k2))

		// A future value waits for its time.
		future := metav1.NewTime(fakeClock.Now().Add(time.Hour))
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &future })
		settled(mak, currentID(idOf(k2)))
		fakeClock.Step(time.Hour)
		poke(mak)
		settled(mak, notCurrentID(idOf(k2)))
		k3 := secretKey(ns, "gitops")
		rec := readRecord(getKey(mak))
		for _, k := range []string{k1, k2, k3} {
			Expect(accepted(rec, k, fakeClock.Now())).To(BeTrue(), "overlapping rotations keep every still-valid version")
		}
		Expect(getKey(mak).Status.PreviousKeys).To(HaveLen(2))
	})

	It("an emergency rotation with overlap 0s refuses the previous key at once", func() {
		mak := newKey(ns, "leaked", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Overlap = &metav1.Duration{}
		})
		settled(mak, ready)
		leaked := secretKey(ns, "leaked")
		fakeClock.Step(minRotationInterval)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		got := settled(mak, notCurrentID(idOf(leaked)))
		Expect(tombstoned(readRecord(got), leaked, fakeClock.Now())).To(BeTrue())
		Expect(got.Status.PreviousKeys).To(BeEmpty())
	})

	It("updates the record's policy without rotating the key", func() {
		mak := newKey(ns, "policy")
		settled(mak, ready)
		key := secretKey(ns, "policy")
		rph := int64(42)
		update(mak, func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Permissions = []authv1alpha1.Permission{authv1alpha1.PermissionAdmin}
			m.Spec.RateLimit = authv1alpha1.RateLimit{Tier: authv1alpha1.TierPro, RequestsPerHour: &rph}
			m.Spec.Restrictions = &authv1alpha1.Restrictions{
				IPAllowlist: []authv1alpha1.IPOrCIDR{"10.0.0.0/8"}, Domains: []authv1alpha1.Domain{"*.example.com"}}
		})
		got := settled(mak, currentID(idOf(key)))
		Eventually(func() record.Policy { return readRecord(got).Policy }).Should(And(
			HaveField("Permissions", Equal([]string{"admin"})),
			HaveField("RequestsPerHour", Equal(int64(42))),
			HaveField("IPAllowlist", Equal([]string{"10.0.0.0/8"})),
			HaveField("Domains", Equal([]string{"*.example.com"})),
		))
		Expect(secretKey(ns, "policy")).To(Equal(key))

		update(mak, func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.RateLimit = authv1alpha1.RateLimit{Tier: authv1alpha1.TierEnterprise}
		})
		Eventually(func() int64 { return readRecord(got).Policy.RequestsPerHour }).Should(BeZero(), "enterprise is unlimited")
	})

	It("disables and re-enables a key, pausing rotation meanwhile", func() {
		mak := newKey(ns, "toggle", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour}
			m.Spec.Rotation.Overlap = &metav1.Duration{Duration: time.Minute}
		})
		settled(mak, ready)
		key := secretKey(ns, "toggle")
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true })
		got := settled(mak, readyReason(authv1alpha1.ReasonDisabled))
		Expect(readRecord(got).Policy.Disabled).To(BeTrue())
		Expect(got.Status.CurrentKey.RotatesAt).To(BeNil())

		fakeClock.Step(2 * time.Hour)
		poke(mak)
		Consistently(func() string { return getKey(mak).Status.CurrentKey.ID }).WithTimeout(2*time.Second).
			Should(Equal(idOf(key)), "a disabled key does not rotate when its period elapses")
		settled(mak, readyReason(authv1alpha1.ReasonDisabled))

		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = false })
		got = settled(mak, ready)
		Expect(readRecord(got).Policy.Disabled).To(BeFalse())
		// The period elapsed while disabled: the key rotates once it is enabled.
		Expect(got.Status.CurrentKey.ID).NotTo(Equal(idOf(key)))
	})

	It("expires a key at spec.expiresAt", func() {
		exp := metav1.NewTime(fakeClock.Now().Add(time.Hour))
		mak := newKey(ns, "temp", func(m *authv1alpha1.MeterrAPIKey) { m.Spec.ExpiresAt = &exp })
		got := settled(mak, ready)
		Expect(readRecord(got).Policy.ExpiresAt.Time).To(BeTemporally("==", exp.Time))
		fakeClock.Step(time.Hour)
		poke(mak)
		got = settled(mak, readyReason(authv1alpha1.ReasonExpired))
		Expect(got.Status.CurrentKey.RotatesAt).To(BeNil())
	})

	It("moves the key to a renamed Secret and deletes the old one", func() {
		mak := newKey(ns, "rename")
		settled(mak, ready)
		oldKey := secretKey(ns, "rename")
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.SecretName = "renamed" })
		got := settled(mak, func(g Gomega, m *authv1alpha1.MeterrAPIKey) { g.Expect(m.Status.SecretName).To(Equal("renamed")) })
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "rename"}, &corev1.Secret{}))
		}).Should(BeTrue())
		newKey := secretKey(ns, "renamed")
		rec := readRecord(got)
		Expect(accepted(rec, newKey, fakeClock.Now())).To(BeTrue())
		Expect(accepted(rec, oldKey, fakeClock.Now())).To(BeTrue(), "the previous key stays valid for the overlap")
	})

	It("applies secretTemplate labels and annotations, leaves others' alone, and removes what the template drops", func() {
		mak := newKey(ns, "templated", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{
				Labels:      map[string]string{"team": "billing", "tier": "gold"},
				Annotations: map[string]string{"reloader.stakater.com/match": "true"},
			}
		})
		settled(mak, ready)
		key := secretKey(ns, "templated")
		s := &corev1.Secret{}
		name := types.NamespacedName{Namespace: ns, Name: "templated"}
		Expect(k8sClient.Get(ctx, name, s)).To(Succeed())
		Expect(s.Labels).To(HaveKeyWithValue("team", "billing"))
		Expect(s.Labels).To(HaveKeyWithValue(authv1alpha1.LabelManagedBy, authv1alpha1.ManagedByValue))
		Expect(s.Annotations).To(HaveKeyWithValue("reloader.stakater.com/match", "true"))

		// Another controller labels and annotates the Secret: that survives,
		// and the operator does not write the Secret back.
		patch := client.MergeFrom(s.DeepCopy())
		s.Labels["policy.example.com/scanned"] = "yes"
		s.Annotations["backup.example.com/at"] = "now"
		Expect(k8sClient.Patch(ctx, s, patch, client.FieldOwner("policy-engine"))).To(Succeed())
		rv := s.ResourceVersion
		poke(mak)
		settled(mak, ready)
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, name, s)).To(Succeed())
			g.Expect(s.ResourceVersion).To(Equal(rv), "nothing writes the Secret while nothing changes")
		}).WithTimeout(2 * time.Second).Should(Succeed())
		Expect(s.Labels).To(HaveKeyWithValue("policy.example.com/scanned", "yes"))
		Expect(s.Annotations).To(HaveKeyWithValue("backup.example.com/at", "now"))

		// The template changes one label and drops another.
		update(mak, func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.SecretTemplate.Labels = map[string]string{"team": "platform"}
		})
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, name, s)).To(Succeed())
			g.Expect(s.Labels).To(HaveKeyWithValue("team", "platform"))
			g.Expect(s.Labels).NotTo(HaveKey("tier"), "a label the template dropped is removed")
		}).Should(Succeed())
		Expect(s.Labels).To(HaveKeyWithValue("policy.example.com/scanned", "yes"))
		Expect(s.Annotations).To(HaveKeyWithValue("backup.example.com/at", "now"))
		Expect(s.Annotations).To(HaveKeyWithValue("reloader.stakater.com/match", "true"))
		Expect(secretKey(ns, "templated")).To(Equal(key), "metadata changes never rotate the key")
	})

	It("deletes the record through its finalizer", func() {
		mak := newKey(ns, "doomed")
		got := settled(mak, ready)
		readRecord(got)
		Expect(k8sClient.Delete(ctx, got)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(got), &authv1alpha1.MeterrAPIKey{}))
		}).Should(BeTrue())
		err := k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace,
			Name: record.Name(ns, "doomed", got.UID)}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the record is gone")
	})

	Context("drift", func() {
		It("repairs a deleted workload Secret with a new key and a Warning; the lost key works for the overlap", func() {
			mak := newKey(ns, "drift-del")
			settled(mak, ready)
			lost := secretKey(ns, "drift-del")
			Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drift-del"}})).To(Succeed())
			got := settled(mak, ready, notCurrentID(idOf(lost)))
			fresh := secretKey(ns, "drift-del")
			rec := readRecord(got)
			Expect(accepted(rec, lost, fakeClock.Now())).To(BeTrue())
			Expect(accepted(rec, fresh, fakeClock.Now())).To(BeTrue())
			Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonSecretMissing))
		})

		It("repairs a workload Secret edited by hand", func() {
			mak := newKey(ns, "drift-edit")
			settled(mak, ready)
			orig := secretKey(ns, "drift-edit")
			s := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "drift-edit"}, s)).To(Succeed())
			s.Data[authv1alpha1.DataKeyAPIKey] = []byte("hunter2")
			Expect(k8sClient.Update(ctx, s)).To(Succeed())
			got := settled(mak, ready, notCurrentID(idOf(orig)))
			fresh := secretKey(ns, "drift-edit")
			Expect(accepted(readRecord(got), fresh, fakeClock.Now())).To(BeTrue())
			Expect(accepted(readRecord(got), orig, fakeClock.Now())).To(BeTrue())
			Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonSecretModified))
		})

		It("rebuilds a deleted record from the workload Secret without changing the key", func() {
			mak := newKey(ns, "drift-rec")
			got := settled(mak, ready)
			key := secretKey(ns, "drift-rec")
			Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: recordsNamespace,
				Name: record.Name(ns, "drift-rec", got.UID)}})).To(Succeed())
			Eventually(func(g Gomega) {
				s := &corev1.Secret{}
				g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace,
					Name: record.Name(ns, "drift-rec", got.UID)}, s)).To(Succeed())
				rec, err := record.Decode(s)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(accepted(rec, key, fakeClock.Now())).To(BeTrue())
			}).Should(Succeed())
			Expect(secretKey(ns, "drift-rec")).To(Equal(key))
			Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonRecordRebuilt))
		})

		It("never overwrites a Secret it does not own", func() {
			foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
				Data: map[string][]byte{"password": []byte("theirs")}}
			Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
			mak := newKey(ns, "taken")
			got := settled(mak, readyReason(authv1alpha1.ReasonSecretConflict))
			Expect(got.Status.CurrentKey).To(BeNil())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())
			Expect(foreign.Data).To(Equal(map[string][]byte{"password": []byte("theirs")}))
			Expect(foreign.OwnerReferences).To(BeEmpty())
			Eventually(func() []string { return eventReasons(got) }).Should(ContainElement(authv1alpha1.ReasonSecretConflict))
			// The cache cannot show the foreign Secret (it carries none of
			// our labels), so the first issue writes a version and then
			// fails to create the Secret: that version reached no
			// workload, and no record may keep accepting it.
			Eventually(func(g Gomega) {
				s := &corev1.Secret{}
				err := k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace, Name: record.Name(ns, "taken", got.UID)}, s)
				if apierrors.IsNotFound(err) {
					return
				}
				g.Expect(err).NotTo(HaveOccurred())
				rec, err := record.Decode(s)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(rec.Keys).To(BeEmpty(), "a version never delivered is dropped")
			}).Should(Succeed())

			// Pointing the key at a free name resolves it.
			update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.SecretName = "taken-key" })
			settled(mak, ready)
			secretKey(ns, "taken-key")
		})
	})

	It("caches only the metadata of the Secrets the operator manages", func() {
		plain := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"}}
		Expect(k8sClient.Create(ctx, plain)).To(Succeed())
		mak := newKey(ns, "cached")
		settled(mak, ready)
		meta := func(name string) *metav1.PartialObjectMetadata {
			m := &metav1.PartialObjectMetadata{}
			m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
			m.Namespace, m.Name = ns, name
			return m
		}
		Eventually(func() error {
			return mgrClient.Get(ctx, client.ObjectKeyFromObject(meta("cached")), meta("cached"))
		}).Should(Succeed())
		Consistently(func() bool {
			return apierrors.IsNotFound(mgrClient.Get(ctx, client.ObjectKeyFromObject(plain), meta("unrelated")))
		}).WithTimeout(time.Second).Should(BeTrue(), "an unlabelled Secret is not in the manager's cache")
	})
})
