// Package cluster holds the specs that need a real node: a kubelet, a
// container runtime, a pod network, kube-proxy and DNS, as `make cluster`
// brings up on this machine (hack/cluster). They run only when
// METERR_CLUSTER_KUBECONFIG points at such a cluster's admin kubeconfig
// (`make test-cluster` sets it); otherwise the suite is skipped.
//
// Each spec file adds its own Describe; this one has the smoke specs that
// prove the cluster itself works. Specs create what they need in
// namespaces of their own and delete them.
package cluster

import (
	"context"
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeconfigEnv names the variable that enables the suite.
const KubeconfigEnv = "METERR_CLUSTER_KUBECONFIG"

var (
	restConfig *rest.Config
	clientset  *kubernetes.Clientset
)

func TestCluster(t *testing.T) {
	if os.Getenv(KubeconfigEnv) == "" {
		t.Skipf("%s is not set: no cluster to run against (make test-cluster)", KubeconfigEnv)
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "Cluster Suite")
}

var _ = BeforeSuite(func() {
	var err error
	restConfig, err = clientcmd.BuildConfigFromFlags("", os.Getenv(KubeconfigEnv))
	Expect(err).NotTo(HaveOccurred())
	restConfig.Timeout = 30 * time.Second
	clientset, err = kubernetes.NewForConfig(restConfig)
	Expect(err).NotTo(HaveOccurred())
})

// ctx returns a context bounded by d for one call or poll.
func ctx(d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	time.AfterFunc(d, cancel)
	return c
}
