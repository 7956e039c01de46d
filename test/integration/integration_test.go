// Package integration runs the manager and the auth server together, in one
// process, against a real API server, sharing one fake clock.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/test/testenv"
	"github.com/meterr/meterr-operator/webhookserver"
)

const recordsNamespace = "meterr-system"

var (
	testEnv   *testenv.Env
	k8sClient client.Client
	fakeClock *clocktesting.FakeClock
	authURL   string
	ctx       context.Context
	cancel    context.CancelFunc
)

func TestIntegration(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Manager and auth server together")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// Gomega's 1 s default is too short on a busy CI machine.
	SetDefaultEventuallyTimeout(10 * time.Second)
	SetDefaultEventuallyPollingInterval(20 * time.Millisecond)
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	testEnv, err = testenv.Start(testenv.Options{CRDDirs: []string{filepath.Join("..", "..", "config", "crd", "bases")}})
	Expect(err).NotTo(HaveOccurred())
	cfg := testEnv.Config
	k8sClient, err = client.New(cfg, client.Options{Scheme: authv1alpha1.Scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: recordsNamespace}})).To(Succeed())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}})).To(Succeed())

	fakeClock = clocktesting.NewFakeClock(time.Now().UTC().Truncate(time.Second))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: authv1alpha1.Scheme, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	Expect(err).NotTo(HaveOccurred())
	r := &controllers.MeterrAPIKeyReconciler{Client: mgr.GetClient(), Clock: fakeClock,
		Options: controllers.Options{RecordsNamespace: recordsNamespace, TombstoneRetention: 720 * time.Hour}}
	Expect(r.SetupWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	Expect(l.Close()).To(Succeed())
	o := webhookserver.DefaultOptions()
	o.Listen, o.MetricsAddr, o.RecordsNamespace, o.Clock = addr, "0", recordsNamespace, fakeClock
	go func() {
		defer GinkgoRecover()
		Expect(webhookserver.Run(ctx, cfg, o, logf.Log.WithName("auth-server"))).To(Succeed())
	}()
	authURL = "http://" + addr
	Eventually(func() int { return get("/readyz", "").status }).WithTimeout(20 * time.Second).Should(Equal(http.StatusOK))
})

var _ = AfterSuite(func() {
	cancel()
	Expect(testEnv.Stop()).To(Succeed())
})

type answer struct {
	status int
	body   map[string]any
}

func (a answer) code() string {
	e, _ := a.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func get(path, key string) answer {
	req, _ := http.NewRequest(http.MethodGet, authURL+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func verify(key string) answer { return get("/v1/auth/verify", key) }

func workloadKey(name string) string {
	s := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: "apps", Name: name}, s)).To(Succeed())
	k := string(s.Data[authv1alpha1.DataKeyAPIKey])
	Expect(apikey.Parse(k) == nil).To(BeTrue(), "no well-formed key in Secret %s", name)
	return k
}

func update(name string, mutate func(*authv1alpha1.MeterrAPIKey)) {
	Eventually(func() error {
		m := &authv1alpha1.MeterrAPIKey{}
		if err := k8sClient.Get(ctx, types.NamespacedName{Namespace: "apps", Name: name}, m); err != nil {
			return err
		}
		mutate(m)
		return k8sClient.Update(ctx, m)
	}).Should(Succeed())
}

// within: the auth server acts on a change soon after the API server accepts
// it. The timeout is generous for a busy CI machine; latency is measured by
// the benchmark harness, not here.
func within(f func() int, want int) {
	EventuallyWithOffset(1, f).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Equal(want))
}

func withinCode(f func() string, want string) {
	EventuallyWithOffset(1, f).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Equal(want))
}

var _ = Describe("a key's whole life, seen through the auth server", func() {
	It("is accepted, rotated with an overlap, expired, disabled, re-enabled and deleted", func() {
		mak := &authv1alpha1.MeterrAPIKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "billing"},
			Spec: authv1alpha1.MeterrAPIKeySpec{
				Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead, authv1alpha1.PermissionWrite},
				Rotation:    authv1alpha1.Rotation{Overlap: &metav1.Duration{Duration: time.Hour}},
				// Unlimited: every poll that gets a 200 counts against the
				// key's hourly quota, and the fake clock does not move while
				// polling, so a slow run could spend the default tier's 1,000
				// and be refused with 429. Rate limits are not tested here.
				RateLimit: authv1alpha1.RateLimit{Tier: authv1alpha1.TierEnterprise},
			},
		}
		Expect(k8sClient.Create(ctx, mak)).To(Succeed())
		var first string
		Eventually(func() error {
			s := &corev1.Secret{}
			return k8sClient.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "billing"}, s)
		}).Should(Succeed())
		first = workloadKey("billing")
		within(func() int { return verify(first).status }, http.StatusOK)
		a := verify(first)
		Expect(a.body).To(HaveKeyWithValue("key_id", apikey.HashOf(first).ID()))
		Expect(a.body).To(HaveKeyWithValue("permissions", ConsistOf("read", "write")))

		By("rotating on requestedAt: both keys work")
		fakeClock.Step(time.Second)
		at := metav1.NewTime(fakeClock.Now())
		update("billing", func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Rotation.RequestedAt = &at })
		var second string
		Eventually(func() bool { second = workloadKey("billing"); return second != first }).Should(BeTrue())
		within(func() int { return verify(second).status }, http.StatusOK)
		Expect(verify(first).status).To(Equal(http.StatusOK), "the previous key works during the overlap")

		By("the overlap ending: the old key is expired_api_key, the new one works")
		// The previous version gets its expiry in the write after the
		// workload Secret's; step the clock only once the controller has
		// settled, or the step races that write.
		Eventually(func() []authv1alpha1.PreviousKeyStatus {
			m := &authv1alpha1.MeterrAPIKey{}
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "billing"}, m)).To(Succeed())
			return m.Status.PreviousKeys
		}).Should(ContainElement(HaveField("ID", apikey.HashOf(first).ID())))
		fakeClock.Step(time.Hour)
		withinCode(func() string { return verify(first).code() }, "expired_api_key")
		Expect(verify(second).status).To(Equal(http.StatusOK))

		By("disabling: every version refused at once as invalid_api_key; enabling restores")
		update("billing", func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = true })
		within(func() int { return verify(second).status }, http.StatusUnauthorized)
		Expect(verify(second).code()).To(Equal("invalid_api_key"))
		update("billing", func(m *authv1alpha1.MeterrAPIKey) { m.Spec.Disabled = false })
		within(func() int { return verify(second).status }, http.StatusOK)

		By("policy changes apply without a new key")
		update("billing", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Restrictions = &authv1alpha1.Restrictions{IPAllowlist: []authv1alpha1.IPOrCIDR{"192.0.2.0/24"}}
		})
		Eventually(func() string { return verify(second).code() }).WithTimeout(10 * time.Second).Should(Equal("ip_not_allowed"))
		Expect(workloadKey("billing")).To(Equal(second))

		By("expiresAt: every version refused as expired_api_key")
		update("billing", func(m *authv1alpha1.MeterrAPIKey) {
			m.Spec.Restrictions = nil
			exp := metav1.NewTime(fakeClock.Now().Add(time.Minute))
			m.Spec.ExpiresAt = &exp
		})
		within(func() int { return verify(second).status }, http.StatusOK)
		fakeClock.Step(time.Minute)
		// Still 200 until the auth server has the new expiresAt: wait for it.
		withinCode(func() string { return verify(second).code() }, "expired_api_key")
		update("billing", func(m *authv1alpha1.MeterrAPIKey) { m.Spec.ExpiresAt = nil })
		within(func() int { return verify(second).status }, http.StatusOK)

		By("deleting: refused promptly, record gone")
		Expect(k8sClient.Delete(ctx, mak)).To(Succeed())
		within(func() int { return verify(second).status }, http.StatusUnauthorized)
		Expect(verify(second).code()).To(Equal("invalid_api_key"))
		err := k8sClient.Get(ctx, types.NamespacedName{Namespace: recordsNamespace,
			Name: record.Name("apps", "billing", mak.UID)}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), fmt.Sprint(err))
	})
})
