package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/usage"
)

// fakeUsage is a UsageSource a test fills.
type fakeUsage struct {
	mu sync.Mutex
	vs []usage.Version
}

func (f *fakeUsage) add(vs ...usage.Version) { f.mu.Lock(); f.vs = append(f.vs, vs...); f.mu.Unlock() }

func (f *fakeUsage) Pull(context.Context) ([]usage.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.vs
	f.vs = nil
	return out, nil
}

func usedAt(m *authv1alpha1.MeterrAPIKey, id string) *time.Time {
	if c := m.Status.CurrentKey; c != nil && c.ID == id && c.LastUsedAt != nil {
		t := c.LastUsedAt.Time
		return &t
	}
	for _, p := range m.Status.PreviousKeys {
		if p.ID == id && p.LastUsedAt != nil {
			t := p.LastUsedAt.Time
			return &t
		}
	}
	return nil
}

var _ = Describe("Last used", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	use := func(m *authv1alpha1.MeterrAPIKey, id string, at time.Time) usage.Version {
		return usage.Version{Namespace: m.Namespace, Name: m.Name, UID: string(m.UID), KeyID: id, LastUsed: at.Unix()}
	}

	It("writes the latest use of every replica, at most once an interval, never backwards, and keeps it across a rotation", func() {
		mak := newKey(ns, "used")
		got := settled(mak, ready)
		never := settled(newKey(ns, "never"), ready)
		id := got.Status.CurrentKey.ID
		clk := clocktesting.NewFakeClock(time.Unix(2_000_000_000, 0))
		src := &fakeUsage{}
		w := &controllers.UsageWriter{Client: k8sClient, Source: src, Clock: clk, Interval: time.Minute,
			WritesPerSecond: 20, Log: logr.Discard()}

		t1 := clk.Now().Add(-5 * time.Second)
		// Two replicas: the later use wins.
		src.add(use(got, id, t1.Add(-time.Minute)), use(got, id, t1))
		w.Step(ctx)
		got = getKey(mak)
		Expect(usedAt(got, id)).To(HaveValue(BeTemporally("==", t1)))
		Expect(getKey(never).Status.CurrentKey.LastUsedAt).To(BeNil(), "a key never used shows no lastUsedAt")

		// A later use within the interval waits; an older one (a
		// restarted replica) never moves it back.
		rv := got.ResourceVersion
		clk.Step(10 * time.Second)
		src.add(use(got, id, clk.Now()), use(got, id, t1.Add(-time.Hour)))
		w.Step(ctx)
		Expect(getKey(mak).ResourceVersion).To(Equal(rv), "a second write within --last-used-interval")
		clk.Step(time.Minute)
		w.Step(ctx)
		Expect(usedAt(getKey(mak), id)).To(HaveValue(BeTemporally("==", clk.Now().Add(-time.Minute))))

		// Nothing moved: no write.
		rv = getKey(mak).ResourceVersion
		clk.Step(2 * time.Minute)
		src.add(use(got, id, t1))
		w.Step(ctx)
		Expect(getKey(mak).ResourceVersion).To(Equal(rv), "a write although nothing moved")

		// A rotation moves the version to previousKeys with its last use.
		fakeClock.Step(minRotationInterval)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		rotated := settled(mak, notCurrentID(id))
		Expect(rotated.Status.PreviousKeys).To(HaveLen(1))
		Expect(rotated.Status.PreviousKeys[0].LastUsedAt).NotTo(BeNil(), "the rotation dropped the previous key's lastUsedAt")
		Expect(rotated.Status.CurrentKey.LastUsedAt).To(BeNil(), "the new key inherited a use")
	})

	It("caps the writes, first come first served", func() {
		clk := clocktesting.NewFakeClock(time.Unix(2_000_000_000, 0))
		src := &fakeUsage{}
		w := &controllers.UsageWriter{Client: k8sClient, Source: src, Clock: clk, Interval: time.Minute,
			WritesPerSecond: 1, Log: logr.Discard()}
		var keys []*authv1alpha1.MeterrAPIKey
		for _, name := range []string{"a", "b", "c"} {
			m := settled(newKey(ns, name), ready)
			keys = append(keys, m)
			src.add(use(m, m.Status.CurrentKey.ID, clk.Now()))
		}
		written := func() (n []string) {
			for _, m := range keys {
				if getKey(m).Status.CurrentKey.LastUsedAt != nil {
					n = append(n, m.Name)
				}
			}
			return n
		}
		w.Step(ctx)
		Expect(written()).To(Equal([]string{"a"}))
		clk.Step(time.Second)
		w.Step(ctx)
		Expect(written()).To(Equal([]string{"a", "b"}))
		clk.Step(time.Second)
		w.Step(ctx)
		Expect(written()).To(Equal([]string{"a", "b", "c"}))
	})

	It("warns while a previous version is still used near the end of its overlap, and clears", func() {
		mak := newKey(ns, "rotating", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Rotation.Overlap = &metav1.Duration{Duration: 10 * time.Minute}
		})
		old := settled(mak, ready).Status.CurrentKey.ID
		fakeClock.Step(minRotationInterval)
		at := metav1.NewTime(fakeClock.Now())
		update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		// The previous version's expiry is written only once the new key is
		// delivered (the crash-safety order): wait for it.
		got := settled(mak, notCurrentID(old), func(g Gomega, m *authv1alpha1.MeterrAPIKey) {
			g.Expect(m.Status.PreviousKeys).To(HaveLen(1))
			g.Expect(m.Status.PreviousKeys[0].ExpiresAt).NotTo(BeNil())
		})
		end := got.Status.PreviousKeys[0].ExpiresAt.Time

		clk := clocktesting.NewFakeClock(end.Add(-110 * time.Second))
		src := &fakeUsage{}
		rec := &recordedEvents{}
		w := &controllers.UsageWriter{Client: k8sClient, Source: src, Clock: clk, Interval: time.Minute,
			WritesPerSecond: 20, WarningWindow: 2 * time.Minute, Recorder: rec, Log: logr.Discard()}
		cond := func() *metav1.Condition {
			return meta.FindStatusCondition(getKey(mak).Status.Conditions, authv1alpha1.ConditionPreviousKeyInUse)
		}

		src.add(use(got, old, end.Add(-150*time.Second)))
		w.Step(ctx)
		Expect(cond()).To(HaveField("Status", metav1.ConditionTrue))
		Expect(cond().Reason).To(Equal(authv1alpha1.ReasonPreviousKeyStillInUse))
		Expect(cond().Message).To(ContainSubstring(old))
		Expect(cond().Message).To(ContainSubstring(end.UTC().Format(time.RFC3339)))
		Expect(rec.reasons()).To(Equal([]string{authv1alpha1.ReasonPreviousKeyStillInUse}))
		Expect(rec.notes[0]).To(ContainSubstring(old))

		// Unused for a window: clears, before the overlap ends.
		clk.SetTime(end.Add(-20 * time.Second))
		w.Step(ctx)
		Expect(cond()).To(HaveField("Status", metav1.ConditionFalse))
		Expect(cond().Reason).To(Equal(authv1alpha1.ReasonPreviousKeyUnused))

		// Used again: warns again; the overlap's end clears it.
		clk.SetTime(end.Add(-5 * time.Second))
		src.add(use(got, old, end.Add(-10*time.Second)))
		w.Step(ctx)
		Expect(cond()).To(HaveField("Status", metav1.ConditionTrue))
		Expect(rec.reasons()).To(HaveLen(2))
		clk.SetTime(end.Add(time.Second))
		w.Step(ctx)
		Expect(cond()).To(HaveField("Status", metav1.ConditionFalse))
	})
})

// A replica on loopback, found by its EndpointSlice: the token is sent, the
// cursor is the replica's now, and a replica gone is forgotten.
var _ = Describe("EndpointSliceSource", func() {
	It("pulls every serving endpoint with the token, from each one's cursor", func() {
		ns := newNamespace()
		var mu sync.Mutex
		var sinces, dialed []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != usage.Path || !usage.Authorized(r, []byte("tok")) {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			mu.Lock()
			sinces = append(sinces, r.URL.Query().Get("since"))
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(usage.Report{Now: 1234, Versions: []usage.Version{
				{Namespace: "team-a", Name: "k", UID: "u", KeyID: "id1", LastUsed: 1200}}})
		}))
		DeferCleanup(srv.Close)
		_, portStr, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
		Expect(err).NotTo(HaveOccurred())
		// The API server refuses loopback addresses in a slice: the slice
		// names a documentation address (TEST-NET-1), and the client dials
		// the loopback server whatever the address.
		port, err := strconv.Atoi(portStr)
		Expect(err).NotTo(HaveOccurred())
		name, p32, no := "http-metrics", int32(port), false
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-metrics-1",
				Labels: map[string]string{discoveryv1.LabelServiceName: "auth-metrics"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &p32}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"192.0.2.10"}},
				// Not serving: not asked.
				{Addresses: []string{"192.0.2.11"}, Conditions: discoveryv1.EndpointConditions{Serving: &no}},
			},
		}
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())
		src := &controllers.EndpointSliceSource{Reader: k8sClient, Namespace: ns, Service: "auth-metrics",
			PortName: "http-metrics", Token: []byte("tok"), HTTP: &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					mu.Lock()
					dialed = append(dialed, addr)
					mu.Unlock()
					var d net.Dialer
					return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
				}}}}
		vs, err := src.Pull(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(vs).To(ConsistOf(usage.Version{Namespace: "team-a", Name: "k", UID: "u", KeyID: "id1", LastUsed: 1200}))
		_, err = src.Pull(ctx)
		Expect(err).NotTo(HaveOccurred())
		mu.Lock()
		Expect(sinces).To(Equal([]string{"0", "1234"}))
		Expect(dialed).To(HaveEach("192.0.2.10:" + portStr))
		mu.Unlock()

		// A wrong token is an error, not an empty report.
		src.Token = []byte("nope")
		_, err = src.Pull(ctx)
		Expect(err).To(MatchError(ContainSubstring("HTTP 401")))
	})
})

// recordedEvents is an events.EventRecorder that keeps what it is given.
type recordedEvents struct {
	mu    sync.Mutex
	rs    []string
	notes []string
}

func (r *recordedEvents) Eventf(_ runtime.Object, _ runtime.Object, _, reason, _, note string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rs = append(r.rs, reason)
	r.notes = append(r.notes, fmt.Sprintf(note, args...))
}

func (r *recordedEvents) reasons() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.rs...)
}
