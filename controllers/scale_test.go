package controllers_test

import (
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

var _ = Describe("a fleet of keys", Label("scale"), func() {
	It("makes 1,000 keys created at once all Ready", func() {
		const n = 1000
		ns := newNamespace()
		start := time.Now()
		var wg sync.WaitGroup
		work := make(chan int)
		for range 16 {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := range work {
					mak := &authv1alpha1.MeterrAPIKey{
						ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("key-%04d", i)},
						Spec:       authv1alpha1.MeterrAPIKeySpec{Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead}},
					}
					Expect(k8sClient.Create(ctx, mak)).To(Succeed())
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()

		Eventually(func() int {
			list := &authv1alpha1.MeterrAPIKeyList{}
			Expect(k8sClient.List(ctx, list, client.InNamespace(ns))).To(Succeed())
			readyCount := 0
			for _, m := range list.Items {
				if meta.IsStatusConditionTrue(m.Status.Conditions, authv1alpha1.ConditionReady) && m.Status.CurrentKey != nil {
					readyCount++
				}
			}
			return readyCount
		}).WithTimeout(5 * time.Minute).WithPolling(time.Second).Should(Equal(n))
		GinkgoWriter.Printf("%d keys Ready in %s\n", n, time.Since(start).Round(time.Millisecond))
	})
})
