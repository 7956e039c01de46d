package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

// These tests prove the CRD schema and its CEL rules on a real API server:
// a bad manifest must be refused at admission, with a message naming the
// field, without any webhook. No controller runs here.

var (
	testEnv   *envtest.Environment
	k8sClient client.Client
	ctx       context.Context
	cancel    context.CancelFunc

	// namespace holds every object the suite creates.
	namespace = "validation"
)

func TestAPIValidation(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "MeterrAPIKey API validation")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(funcr.New(func(prefix, args string) {
		GinkgoWriter.Println(prefix, args)
	}, funcr.Options{}))
	ctx, cancel = context.WithCancel(context.Background())

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		// envtest's 20 s is too short when make test runs its suites at
		// once on 2 cores: a start that would have succeeded is killed and
		// retried five times (test/testenv's DefaultStartTimeout, which
		// api/ may not import).
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	// `make test` exports KUBEBUILDER_ASSETS; a bare `go test` falls back to
	// the binaries `make envtest-assets` builds.
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if dir := filepath.Join("..", "..", "bin", "k8s", "1.37.2"); isDir(dir) {
			testEnv.BinaryAssetsDirectory = dir
		}
	}

	cfg, err := testEnv.Start()
	Expect(err).NotTo(HaveOccurred(), "starting the control plane (set KUBEBUILDER_ASSETS or run `make envtest-assets`)")

	scheme := runtime.NewScheme()
	Expect(corev1.AddToScheme(scheme)).To(Succeed())
	Expect(authv1alpha1.AddToScheme(scheme)).To(Succeed())

	// Strict field validation is what `kubectl apply` uses, so unknown and
	// duplicated fields are refused here as they are for a user.
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme, FieldValidation: metav1.FieldValidationStrict})
	Expect(err).NotTo(HaveOccurred())

	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})).To(Succeed())
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
