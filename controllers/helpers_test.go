package controllers_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

var nsCounter atomic.Int64

// newNamespace makes a namespace of its own for one test.
func newNamespace() string {
	name := fmt.Sprintf("t%d-%d", GinkgoParallelProcess(), nsCounter.Add(1))
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
	return name
}

func newKey(ns, name string, mutate ...func(*authv1alpha1.MeterrAPIKey)) *authv1alpha1.MeterrAPIKey {
	mak := &authv1alpha1.MeterrAPIKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.MeterrAPIKeySpec{Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead}},
	}
	for _, m := range mutate {
		m(mak)
	}
	Expect(k8sClient.Create(ctx, mak)).To(Succeed())
	return mak
}

func getKey(mak *authv1alpha1.MeterrAPIKey) *authv1alpha1.MeterrAPIKey {
	out := &authv1alpha1.MeterrAPIKey{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mak), out)).To(Succeed())
	return out
}

// update changes a key's spec, retrying on conflicts with the controller.
func update(mak *authv1alpha1.MeterrAPIKey, mutate func(*authv1alpha1.MeterrAPIKey)) {
	Eventually(func() error {
		cur := getKey(mak)
		mutate(cur)
		return k8sClient.Update(ctx, cur)
	}).Should(Succeed())
}

var pokes atomic.Int64

// poke makes the controller look at a key again after the fake clock moved:
// an annotation change is a watch event, but no spec change.
func poke(mak *authv1alpha1.MeterrAPIKey) {
	update(mak, func(m *authv1alpha1.MeterrAPIKey) {
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations["test.meterr.ai/poke"] = fmt.Sprint(pokes.Add(1))
	})
}

// settled waits until the controller has reconciled the key's latest generation
// and a condition on it says what it is, and returns it.
func settled(mak *authv1alpha1.MeterrAPIKey, check ...func(g Gomega, m *authv1alpha1.MeterrAPIKey)) *authv1alpha1.MeterrAPIKey {
	var out *authv1alpha1.MeterrAPIKey
	EventuallyWithOffset(1, func(g Gomega) {
		out = &authv1alpha1.MeterrAPIKey{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mak), out)).To(Succeed())
		g.Expect(out.Status.ObservedGeneration).To(Equal(out.Generation))
		g.Expect(meta.FindStatusCondition(out.Status.Conditions, authv1alpha1.ConditionReady)).NotTo(BeNil())
		for _, c := range check {
			c(g, out)
		}
	}).WithTimeout(20 * time.Second).Should(Succeed())
	return out
}

func ready(g Gomega, m *authv1alpha1.MeterrAPIKey) {
	c := meta.FindStatusCondition(m.Status.Conditions, authv1alpha1.ConditionReady)
	g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "Ready: %s %s", c.Reason, c.Message)
	g.Expect(m.Status.CurrentKey).NotTo(BeNil())
}

func readyReason(reason string) func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
	return func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
		c := meta.FindStatusCondition(m.Status.Conditions, authv1alpha1.ConditionReady)
		g.Expect(c.Reason).To(Equal(reason))
	}
}

func currentID(id string) func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
	return func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
		g.Expect(m.Status.CurrentKey).NotTo(BeNil())
		g.Expect(m.Status.CurrentKey.ID).To(Equal(id))
	}
}

func notCurrentID(id string) func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
	return func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
		g.Expect(m.Status.CurrentKey).NotTo(BeNil())
		g.Expect(m.Status.CurrentKey.ID).NotTo(Equal(id))
	}
}

// secretKey reads the plaintext key from a workload Secret. Failure messages
// never show it: only whether it was there.
func secretKey(ns, name string) string {
	s := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s)).To(Succeed())
	k := string(s.Data[authv1alpha1.DataKeyAPIKey])
	Expect(apikey.Parse(k) == nil).To(BeTrue(), "the workload Secret holds no well-formed key")
	Expect(string(s.Data[authv1alpha1.DataKeyEnv]) == k).To(BeTrue(), "api-key and METERR_API_KEY differ")
	return k
}

func readRecord(mak *authv1alpha1.MeterrAPIKey) *record.Record {
	s := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace,
		Name: record.Name(mak.Namespace, mak.Name, mak.UID)}, s)).To(Succeed())
	rec, err := record.Decode(s)
	Expect(err).NotTo(HaveOccurred())
	return rec
}

// accepted reports whether a record accepts a key at now: its hash is there
// and has not expired. It says nothing about the key itself.
func accepted(rec *record.Record, key string, now time.Time) bool {
	h := apikey.HashOf(key).String()
	for _, v := range rec.Keys {
		if v.Hash == h {
			return !v.Expired(now)
		}
	}
	return false
}

func tombstoned(rec *record.Record, key string, now time.Time) bool {
	h := apikey.HashOf(key).String()
	for _, v := range rec.Keys {
		if v.Hash == h {
			return v.Expired(now)
		}
	}
	return false
}

func idOf(key string) string { return apikey.HashOf(key).ID() }

// eventReasons lists the reasons of the events about a key.
func eventReasons(mak *authv1alpha1.MeterrAPIKey) []string {
	list := &eventsv1.EventList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(mak.Namespace))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == mak.Name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// expectNowhere checks that a plaintext key appears in no event, status or
// record. The failure message names where, never the key.
func expectNowhere(ns string, keys ...string) {
	var blobs []string
	events := &eventsv1.EventList{}
	Expect(k8sClient.List(ctx, events, client.InNamespace(ns))).To(Succeed())
	for _, e := range events.Items {
		blobs = append(blobs, "event "+e.Name+": "+e.Note)
	}
	maks := &authv1alpha1.MeterrAPIKeyList{}
	Expect(k8sClient.List(ctx, maks, client.InNamespace(ns))).To(Succeed())
	for _, m := range maks.Items {
		blobs = append(blobs, fmt.Sprintf("status of %s: %+v", m.Name, m.Status))
	}
	recs := &corev1.SecretList{}
	Expect(k8sClient.List(ctx, recs, client.InNamespace(recordsNamespace))).To(Succeed())
	for _, s := range recs.Items {
		blobs = append(blobs, "record "+s.Name+": "+string(s.Data[record.DataKey])+fmt.Sprint(s.Annotations))
	}
	for _, b := range blobs {
		where, _, _ := strings.Cut(b, ":")
		for _, k := range keys {
			Expect(strings.Contains(b, k)).To(BeFalse(), "a plaintext key appears in %s", where)
		}
	}
}
