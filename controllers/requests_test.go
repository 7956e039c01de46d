package controllers_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/record"
)

// requestLog counts the suite manager's API requests by method and path.
type requestLog struct {
	mu   sync.Mutex
	reqs []string
}

var apiRequests = &requestLog{}

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.URL.Query().Get("watch") != "true" {
			l.mu.Lock()
			l.reqs = append(l.reqs, req.Method+" "+req.URL.Path)
			l.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// about returns the requests, from index from on, that touch the key's
// namespace or its record, leaving out events (this suite records the
// routine ones, which the manager does not by default).
func (l *requestLog) about(from int, mak *authv1alpha1.MeterrAPIKey) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	rec := record.Name(mak.Namespace, mak.Name, mak.UID)
	for _, r := range l.reqs[from:] {
		if strings.Contains(r, "/events") {
			continue
		}
		// A record's create names no record: it is the only create in
		// the records namespace while this spec runs.
		if strings.Contains(r, "/namespaces/"+mak.Namespace+"/") || strings.HasSuffix(r, "/secrets/"+rec) ||
			r == "POST /api/v1/namespaces/"+recordsNamespace+"/secrets" {
			out = append(out, r)
		}
	}
	return out
}

func (l *requestLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

// Issue 27: the floor is the finalizer, the record, the Secret and the
// status for a new key; the record twice (the new version, then the old
// one's expiry once the new key is delivered), the Secret and the status
// for a rotation. The reconciles these writes trigger read nothing.
var _ = Describe("API requests per key", func() {
	settle := func(mak *authv1alpha1.MeterrAPIKey, from int) []string {
		// Let the reconciles triggered by the key's own writes run out.
		var reqs []string
		Eventually(func() []string { return apiRequests.about(from, mak) }).Should(Not(BeEmpty()))
		Consistently(func() int {
			reqs = apiRequests.about(from, mak)
			return len(reqs)
		}, 2*time.Second, 100*time.Millisecond).Should(Equal(len(apiRequests.about(from, mak))))
		return reqs
	}

	It("are four to create a key and four to rotate it, none of them a read", func() {
		ns := newNamespace()
		from := apiRequests.len()
		mak := newKey(ns, "counted")
		got := settled(mak, ready)
		created := settle(got, from)
		Expect(created).To(ConsistOf(
			HavePrefix("PATCH /apis/auth.meterr.ai/v1alpha1/namespaces/"+ns+"/meterrapikeys/counted"),
			HavePrefix("POST /api/v1/namespaces/"+recordsNamespace+"/secrets"),
			HavePrefix("POST /api/v1/namespaces/"+ns+"/secrets"),
			"PATCH /apis/auth.meterr.ai/v1alpha1/namespaces/"+ns+"/meterrapikeys/counted/status",
		), "creating a key")

		k1 := secretKey(ns, "counted")
		fakeClock.Step(time.Minute)
		at := metav1.NewTime(fakeClock.Now())
		from = apiRequests.len()
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		got = settled(mak, notCurrentID(idOf(k1)))
		rotated := settle(got, from)
		Expect(rotated).To(ConsistOf(
			"PATCH /api/v1/namespaces/"+recordsNamespace+"/secrets/"+record.Name(ns, "counted", got.UID),
			"PATCH /api/v1/namespaces/"+ns+"/secrets/counted",
			"PATCH /api/v1/namespaces/"+recordsNamespace+"/secrets/"+record.Name(ns, "counted", got.UID),
			"PATCH /apis/auth.meterr.ai/v1alpha1/namespaces/"+ns+"/meterrapikeys/counted/status",
		), "rotating a key")
	})
})

// laggingClient serves the metadata of some Secrets from a snapshot, as a
// cache that has not yet seen the latest write would.
type laggingClient struct {
	client.Client
	frozen map[types.NamespacedName]*metav1.PartialObjectMetadata
}

func (c *laggingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		if f, ok := c.frozen[key]; ok {
			f.DeepCopyInto(m)
			return nil
		}
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// What the uncached reads protected, the preconditions now do: a rotation
// decided on a view the API server has moved past is refused, delivers
// nothing, and is decided again from what the API server holds.
var _ = Describe("a decision on a stale view", func() {
	It("is refused by the API server, delivers nothing, and is taken again from a fresh read", func() {
		ns := newNamespace()
		mak := newKey(ns, "stale", func(m *authv1alpha1.MeterrAPIKey) { m.Labels = map[string]string{manualLabel: "true"} })
		lc := &laggingClient{Client: k8sClient, frozen: map[types.NamespacedName]*metav1.PartialObjectMetadata{}}
		r := &controllers.MeterrAPIKeyReconciler{Client: lc, APIReader: k8sClient, Clock: fakeClock,
			Recorder: events.NewFakeRecorder(100),
			Options:  controllers.Options{RecordsNamespace: recordsNamespace, TombstoneRetention: retention}}
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mak)}
		for range 2 {
			_, err := r.Reconcile(ctx, req)
			Expect(err).NotTo(HaveOccurred())
		}
		got := getKey(mak)
		k1 := secretKey(ns, "stale")

		// The cache keeps showing the record as this reconciler wrote it,
		// while someone else writes it.
		recName := types.NamespacedName{Namespace: recordsNamespace, Name: record.Name(ns, "stale", got.UID)}
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		Expect(k8sClient.Get(ctx, recName, meta)).To(Succeed())
		lc.frozen[recName] = meta
		rec := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, recName, rec)).To(Succeed())
		patch := client.MergeFrom(rec.DeepCopy())
		metav1.SetMetaDataAnnotation(&rec.ObjectMeta, "example.com/touched", "yes")
		Expect(k8sClient.Patch(ctx, rec, patch)).To(Succeed())

		fakeClock.Step(time.Minute)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		_, err := r.Reconcile(ctx, req)
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "the record's write carries the version the decision saw: %v", err)
		Expect(secretKey(ns, "stale")).To(Equal(k1), "nothing is delivered on a refused decision")
		Expect(getKey(mak).Status.CurrentKey.ID).To(Equal(got.Status.CurrentKey.ID), "the status is left alone")

		_, err = r.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		k2 := secretKey(ns, "stale")
		Expect(k2).NotTo(Equal(k1), "the rotation is decided again and lands")
		latest := readRecord(getKey(mak))
		Expect(accepted(latest, k1, fakeClock.Now())).To(BeTrue(), "the previous key stays for its overlap")
		Expect(accepted(latest, k2, fakeClock.Now())).To(BeTrue())
	})
})
