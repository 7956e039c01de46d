package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
)

var errInjected = errors.New("injected fault")

// faultyClient fails its Nth write. With after set, the write reaches the API
// server and only the answer is lost (a timeout, a crash right after); else it
// never happens. It remembers every plaintext it delivered to a workload Secret.
type faultyClient struct {
	client.Client
	mu        sync.Mutex
	failAt    int
	after     bool
	writes    int
	delivered *[]string
}

func (c *faultyClient) write(obj client.Object, do func() error) error {
	c.mu.Lock()
	c.writes++
	fail := c.writes == c.failAt
	c.mu.Unlock()
	if fail && !c.after {
		return errInjected
	}
	err := do()
	if err == nil {
		if s, ok := obj.(*corev1.Secret); ok && s.Namespace != recordsNamespace {
			if k := string(s.Data[authv1alpha1.DataKeyAPIKey]); k != "" {
				*c.delivered = append(*c.delivered, k)
			}
		}
	}
	if fail {
		return errInjected
	}
	return err
}

func (c *faultyClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	return c.write(obj, func() error { return c.Client.Create(ctx, obj, opts...) })
}

func (c *faultyClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	return c.write(obj, func() error { return c.Client.Update(ctx, obj, opts...) })
}

func (c *faultyClient) Patch(ctx context.Context, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
	return c.write(obj, func() error { return c.Client.Patch(ctx, obj, p, opts...) })
}

func (c *faultyClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	return c.write(nil, func() error {
		err := c.Client.Apply(ctx, obj, opts...)
		if s, ok := obj.(*applycorev1.SecretApplyConfiguration); ok && err == nil && *s.Namespace != recordsNamespace {
			if k := string(s.Data[authv1alpha1.DataKeyAPIKey]); k != "" {
				*c.delivered = append(*c.delivered, k)
			}
		}
		return err
	})
}

func (c *faultyClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	return c.write(obj, func() error { return c.Client.Delete(ctx, obj, opts...) })
}

func (c *faultyClient) Status() client.SubResourceWriter { return &faultyStatus{c} }

type faultyStatus struct{ c *faultyClient }

func (s *faultyStatus) Create(ctx context.Context, obj, sub client.Object, opts ...client.SubResourceCreateOption) error {
	return s.c.write(obj, func() error { return s.c.Client.Status().Create(ctx, obj, sub, opts...) })
}

func (s *faultyStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	return s.c.write(obj, func() error { return s.c.Client.Status().Update(ctx, obj, opts...) })
}

func (s *faultyStatus) Patch(ctx context.Context, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	return s.c.write(obj, func() error { return s.c.Client.Status().Patch(ctx, obj, p, opts...) })
}

func (s *faultyStatus) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
	return s.c.write(nil, func() error { return s.c.Client.Status().Apply(ctx, obj, opts...) })
}

var _ = Describe("the ordering invariant under faults", func() {
	// reconcilerWith drives the reconciler by hand (the suite's manager
	// ignores keys labelled manual) through a client that fails as told.
	reconcilerWith := func(fc *faultyClient) *controllers.MeterrAPIKeyReconciler {
		return &controllers.MeterrAPIKeyReconciler{
			Client: fc, APIReader: k8sClient, Clock: fakeClock,
			Recorder: events.NewFakeRecorder(100),
			Options:  controllers.Options{RecordsNamespace: recordsNamespace, TombstoneRetention: retention},
		}
	}
	reconcileOnce := func(fc *faultyClient, mak *authv1alpha1.MeterrAPIKey) error {
		_, err := reconcilerWith(fc).Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mak)})
		return err
	}
	converge := func(delivered *[]string, mak *authv1alpha1.MeterrAPIKey) {
		for range 3 {
			Expect(reconcileOnce(&faultyClient{Client: k8sClient, delivered: delivered}, mak)).To(Succeed())
		}
	}
	// invariant: every key ever delivered is accepted by the record now
	// (the fake clock does not move, so nothing has reached its expiry).
	invariant := func(delivered []string, mak *authv1alpha1.MeterrAPIKey, when string) {
		rec := readRecord(mak)
		for i, k := range delivered {
			Expect(accepted(rec, k, fakeClock.Now())).To(BeTrue(),
				"%s: delivered key #%d (id %s) is not accepted by the record", when, i, idOf(k))
		}
	}

	// prepare makes a key the suite's manager leaves alone; for the rotation
	// phase it issues the first key cleanly and requests a rotation.
	prepare := func(rotation bool, delivered *[]string) (string, *authv1alpha1.MeterrAPIKey) {
		ns := newNamespace()
		mak := newKey(ns, "k", func(m *authv1alpha1.MeterrAPIKey) { m.Labels = map[string]string{manualLabel: "true"} })
		if rotation {
			converge(delivered, mak)
			fakeClock.Step(time.Second)
			at := metav1.NewTime(fakeClock.Now())
			update(mak, func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		}
		return ns, mak
	}

	for _, rotation := range []bool{false, true} {
		phase := map[bool]string{false: "first issue", true: "rotation"}[rotation]
		It(fmt.Sprintf("holds when any write of a %s fails, before or after it reaches the API server", phase), func() {
			// Count the writes of one clean pass, so every N is covered.
			var clean []string
			_, mak := prepare(rotation, &clean)
			counter := &faultyClient{Client: k8sClient, delivered: &clean}
			Expect(reconcileOnce(counter, mak)).To(Succeed())
			n := counter.writes
			Expect(n).To(BeNumerically(">=", 3))

			for failAt := 1; failAt <= n; failAt++ {
				for _, after := range []bool{false, true} {
					var delivered []string
					ns, mak := prepare(rotation, &delivered)
					fc := &faultyClient{Client: k8sClient, delivered: &delivered, failAt: failAt, after: after}
					err := reconcileOnce(fc, mak)
					Expect(err).To(HaveOccurred(), "write %d (after=%v) was not reached", failAt, after)
					if len(delivered) > 0 {
						invariant(delivered, getKey(mak), fmt.Sprintf("after failing write %d (after=%v)", failAt, after))
					}

					converge(&delivered, mak)
					got := getKey(mak)
					invariant(delivered, got, fmt.Sprintf("after recovering from write %d (after=%v)", failAt, after))
					current := secretKey(ns, "k")
					Expect(got.Status.CurrentKey).NotTo(BeNil())
					Expect(got.Status.CurrentKey.ID).To(Equal(idOf(current)), "status converges on the delivered key")
					Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
					rec := readRecord(got)
					live := 0
					for _, v := range rec.Keys {
						if v.ExpiresAt == nil {
							live++
						}
					}
					Expect(live).To(Equal(1), "exactly one version is current; undelivered ones are dropped")
					deliveredIDs := map[string]bool{}
					for _, k := range delivered {
						deliveredIDs[idOf(k)] = true
					}
					for _, v := range rec.Keys {
						if !v.Expired(fakeClock.Now()) {
							Expect(deliveredIDs[v.ID]).To(BeTrue(), "version %s is accepted but was never delivered (write %d, after=%v)", v.ID, failAt, after)
						}
					}
					if rotation {
						Expect(len(got.Status.PreviousKeys)).To(BeNumerically(">=", 1), "the pre-rotation key is listed as previous")
					}
				}
			}
		})
	}
})
