package controllers_test

import (
	"net/http"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
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
