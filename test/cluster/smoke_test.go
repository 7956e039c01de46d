package cluster

import (
	"fmt"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// smokeImage is built and imported by `make cluster` (hack/cluster/tools/images/smoke).
func smokeImage() string {
	if img := os.Getenv("METERR_CLUSTER_SMOKE_IMAGE"); img != "" {
		return img
	}
	return "meterr.local/smoke:1"
}

var _ = Describe("the local cluster", Ordered, func() {
	var ns string

	BeforeAll(func() {
		n, err := clientset.CoreV1().Namespaces().Create(ctx(30*time.Second), &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "smoke-"},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		ns = n.Name
		DeferCleanup(func() {
			err := clientset.CoreV1().Namespaces().Delete(ctx(30*time.Second), ns, metav1.DeleteOptions{})
			Expect(client(err)).To(Succeed())
			Eventually(func() bool {
				_, err := clientset.CoreV1().Namespaces().Get(ctx(10*time.Second), ns, metav1.GetOptions{})
				return apierrors.IsNotFound(err)
			}).WithTimeout(2*time.Minute).WithPolling(time.Second).Should(BeTrue(), "namespace %s is not gone", ns)
		})
	})

	It("has one Ready node", func() {
		nodes, err := clientset.CoreV1().Nodes().List(ctx(30*time.Second), metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(nodes.Items).To(HaveLen(1))
		Expect(nodeReady(&nodes.Items[0])).To(BeTrue(), "node %s is not Ready", nodes.Items[0].Name)
	})

	It("runs CoreDNS behind the kube-dns Service", func() {
		Eventually(func(g Gomega) {
			d, err := clientset.AppsV1().Deployments("kube-system").Get(ctx(10*time.Second), "coredns", metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(d.Status.AvailableReplicas).To(BeNumerically(">=", 1))
		}).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Succeed())
		svc, err := clientset.CoreV1().Services("kube-system").Get(ctx(10*time.Second), "kube-dns", metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(svc.Spec.ClusterIP).To(Equal("10.96.0.10"))
	})

	Context("a 2-replica Deployment behind a ClusterIP Service", Ordered, func() {
		const secretName, secretKey = "smoke", "value"
		var svcIP string
		var pods []string

		BeforeAll(func() {
			_, err := clientset.CoreV1().Secrets(ns).Create(ctx(30*time.Second), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: secretName},
				StringData: map[string]string{secretKey: "first"},
			}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())

			labels := map[string]string{"app": "web"}
			_, err = clientset.AppsV1().Deployments(ns).Create(ctx(30*time.Second), &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec: appsv1.DeploymentSpec{
					Replicas: ptr.To[int32](2),
					Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: labels},
						Spec: corev1.PodSpec{
							Containers: []corev1.Container{{
								Name:            "web",
								Image:           smokeImage(),
								ImagePullPolicy: corev1.PullNever,
								Args:            []string{"serve", "--addr", ":8080", "--file", "/etc/smoke/" + secretKey},
								Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
								ReadinessProbe: &corev1.Probe{
									ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
									PeriodSeconds: 1,
								},
								SecurityContext: restricted(),
								VolumeMounts:    []corev1.VolumeMount{{Name: "secret", MountPath: "/etc/smoke", ReadOnly: true}},
							}},
							Volumes: []corev1.Volume{{
								Name:         "secret",
								VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName}},
							}},
						},
					},
				},
			}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())

			svc, err := clientset.CoreV1().Services(ns).Create(ctx(30*time.Second), &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec: corev1.ServiceSpec{
					Selector: labels,
					Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
				},
			}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			svcIP = svc.Spec.ClusterIP

			Eventually(func(g Gomega) {
				d, err := clientset.AppsV1().Deployments(ns).Get(ctx(10*time.Second), "web", metav1.GetOptions{})
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(d.Status.ReadyReplicas).To(Equal(int32(2)))
			}).WithTimeout(2*time.Minute).WithPolling(time.Second).Should(Succeed(), "the Deployment's 2 replicas are not Ready")
			list, err := clientset.CoreV1().Pods(ns).List(ctx(30*time.Second), metav1.ListOptions{LabelSelector: "app=web"})
			Expect(err).NotTo(HaveOccurred())
			pods = nil
			for _, p := range list.Items {
				if p.DeletionTimestamp == nil {
					pods = append(pods, p.Name)
				}
			}
			Expect(pods).To(HaveLen(2))
		})

		It("is reached by its DNS name from another pod, on both replicas", func() {
			name := fmt.Sprintf("web.%s.svc.cluster.local", ns)
			_, err := clientset.CoreV1().Pods(ns).Create(ctx(30*time.Second), &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "probe"},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{
						Name:            "probe",
						Image:           smokeImage(),
						ImagePullPolicy: corev1.PullNever,
						Args: []string{"probe", "--lookup", name, "--get", "http://" + name + "/",
							"--count", "20", "--interval", "100ms"},
						SecurityContext: restricted(),
					}},
				},
			}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			var phase corev1.PodPhase
			Eventually(func() corev1.PodPhase {
				p, err := clientset.CoreV1().Pods(ns).Get(ctx(10*time.Second), "probe", metav1.GetOptions{})
				if err != nil {
					return ""
				}
				phase = p.Status.Phase
				return phase
			}).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(BeElementOf(corev1.PodSucceeded, corev1.PodFailed))
			logs, err := clientset.CoreV1().Pods(ns).GetLogs("probe", &corev1.PodLogOptions{}).DoRaw(ctx(30 * time.Second))
			Expect(err).NotTo(HaveOccurred())
			out := string(logs)
			GinkgoWriter.Printf("probe pod's output:\n%s", out)
			Expect(phase).To(Equal(corev1.PodSucceeded), "the probe failed:\n%s", out)
			// CoreDNS answered with the Service's ClusterIP.
			Expect(out).To(ContainSubstring(fmt.Sprintf("lookup %s: %s\n", name, svcIP)))
			for _, p := range pods {
				Expect(out).To(ContainSubstring(": 200 "+p+"\n"), "no answer from replica %s", p)
			}
		})

		It("sees a Secret update in the pods' volume", func() {
			for _, p := range pods {
				Expect(fileIn(p, ns)).To(Equal("first"))
			}
			s, err := clientset.CoreV1().Secrets(ns).Get(ctx(10*time.Second), secretName, metav1.GetOptions{})
			Expect(err).NotTo(HaveOccurred())
			s.Data = map[string][]byte{secretKey: []byte("second")}
			_, err = clientset.CoreV1().Secrets(ns).Update(ctx(10*time.Second), s, metav1.UpdateOptions{})
			Expect(err).NotTo(HaveOccurred())
			updated := time.Now()
			for _, p := range pods {
				polls := 0
				Eventually(func() string { polls++; return fileIn(p, ns) }).
					WithTimeout(90*time.Second).WithPolling(200*time.Millisecond).Should(Equal("second"), "pod %s", p)
				GinkgoWriter.Printf("pod %s saw the update %v after it (%d polls)\n", p, time.Since(updated).Round(100*time.Millisecond), polls)
			}
		})
	})
})

// fileIn returns what pod's smoke server reads from its Secret volume, through
// the API server's proxy to the pod.
func fileIn(pod, ns string) string {
	b, err := clientset.CoreV1().Pods(ns).ProxyGet("http", pod, "8080", "/file", nil).DoRaw(ctx(10 * time.Second))
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// restricted is the restricted Pod Security profile's container settings.
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// client treats NotFound as success, for deletes.
func client(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
