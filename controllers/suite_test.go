package controllers_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/test/testenv"
)

const (
	recordsNamespace = "meterr-system"
	retention        = 720 * time.Hour
	// minRotationInterval is the suite manager's --min-rotation-interval.
	minRotationInterval = 30 * time.Second
	// manualLabel marks MeterrAPIKeys that the suite's manager must leave
	// alone, so a test can drive the reconciler by hand.
	manualLabel = "test.meterr.ai/manual"
)

var (
	testEnv   *testenv.Env
	cfg       *rest.Config
	k8sClient client.Client // uncached: assertions read what the API server holds
	mgrClient client.Client // the manager's cached client
	fakeClock *clocktesting.FakeClock
	ctx       context.Context
	cancel    context.CancelFunc
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// Gomega's 1 s default is too short on a busy CI machine: bare
	// Eventually calls and the update/poke helpers use this.
	SetDefaultEventuallyTimeout(10 * time.Second)
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	testEnv, err = testenv.Start(testenv.Options{CRDDirs: []string{filepath.Join("..", "config", "crd", "bases")}})
	Expect(err).NotTo(HaveOccurred())
	cfg = testEnv.Config
	cfg.QPS, cfg.Burst = 2000, 4000

	k8sClient, err = client.New(cfg, client.Options{Scheme: authv1alpha1.Scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: recordsNamespace}})).To(Succeed())

	fakeClock = clocktesting.NewFakeClock(time.Now().UTC().Truncate(time.Second))

	cacheOpts := controllers.CacheOptions()
	notManual, err := labels.NewRequirement(manualLabel, selection.DoesNotExist, nil)
	Expect(err).NotTo(HaveOccurred())
	cacheOpts.ByObject[&authv1alpha1.MeterrAPIKey{}] = cache.ByObject{Label: labels.NewSelector().Add(*notManual)}
	// The manager's requests are counted (requests_test.go).
	mgrCfg := rest.CopyConfig(cfg)
	mgrCfg.Wrap(apiRequests.wrap)
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:  authv1alpha1.Scheme,
		Cache:   cacheOpts,
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	Expect(err).NotTo(HaveOccurred())
	mgrClient = mgr.GetClient()
	r := &controllers.MeterrAPIKeyReconciler{
		Client: mgr.GetClient(),
		Clock:  fakeClock,
		Options: controllers.Options{
			RecordsNamespace:        recordsNamespace,
			TombstoneRetention:      retention,
			MaxConcurrentReconciles: 8,
			MinRotationInterval:     minRotationInterval,
			// The lifecycle specs read the routine events too.
			RoutineEvents: true,
		},
	}
	Expect(r.SetupWithManager(mgr)).To(Succeed())
	// A short sweep: the manager never sees keys labelled manual, so only
	// the sweep finds their orphaned records, as after a manager outage.
	reaper := &controllers.RecordReaper{Client: mgr.GetClient(), RecordsNamespace: recordsNamespace, Sweep: 2 * time.Second}
	Expect(reaper.SetupWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	cancel()
	Expect(testEnv.Stop()).To(Succeed())
})
