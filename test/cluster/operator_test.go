package cluster

// The operator as users run it: its image (make image, make release) on a
// real node, installed from dist/install.yaml and from the chart, keys
// delivered by the kubelet into pods, the auth Service balanced by
// kube-proxy, a rolling upgrade, pod deletions and node daemon faults
// under load, and Caddy in front, configured from the shipped file.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	system  = "meterr-system"
	tenant  = "cluster-tenant"
	release = "meterr"
	// The release bundle's version: another build (its version is stamped
	// in the binary) under another tag, for the rolling upgrade.
	nextVersion = "v0.0.1-cluster"
	authDNS     = "meterr-auth-server.meterr-system.svc.cluster.local"
	leaseName   = "meterr-operator.auth.meterr.ai"
)

func workloadImage() string {
	if img := os.Getenv("METERR_CLUSTER_WORKLOAD_IMAGE"); img != "" {
		return img
	}
	return "meterr.local/workload:1"
}

func caddyImage() string {
	if img := os.Getenv("METERR_CLUSTER_CADDY_IMAGE"); img != "" {
		return img
	}
	return "meterr.local/caddy:1"
}

// expectRunning holds the operator's pods to what the manifests promise:
// Ready, probes, the restricted security context, the PDB counting the
// auth server's replicas, the NetworkPolicies accepted.
func expectRunning(authReplicas int32) {
	GinkgoHelper()
	kubectl("-n", system, "rollout", "status", "deployment/meterr-manager", "--timeout=3m")
	kubectl("-n", system, "rollout", "status", "deployment/meterr-auth-server", "--timeout=3m")
	pods, err := clientset.CoreV1().Pods(system).List(ctx(30*time.Second), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=meterr-operator",
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(pods.Items).NotTo(BeEmpty())
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		Expect(ready).To(BeTrue(), "pod %s is not Ready", p.Name)
		psc := p.Spec.SecurityContext
		for _, c := range p.Spec.Containers {
			sc := c.SecurityContext
			Expect(sc).NotTo(BeNil(), "%s/%s: no securityContext", p.Name, c.Name)
			Expect(sc.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()), "%s/%s: root file system not read-only", p.Name, c.Name)
			Expect(sc.AllowPrivilegeEscalation).To(HaveValue(BeFalse()), "%s/%s", p.Name, c.Name)
			nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
			Expect(nonRoot).To(BeTrue(), "%s/%s: not runAsNonRoot", p.Name, c.Name)
			seccomp := sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault ||
				psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
			Expect(seccomp).To(BeTrue(), "%s/%s: no RuntimeDefault seccomp profile", p.Name, c.Name)
			Expect(c.ReadinessProbe).NotTo(BeNil(), "%s/%s: no readiness probe", p.Name, c.Name)
			Expect(c.LivenessProbe).NotTo(BeNil(), "%s/%s: no liveness probe", p.Name, c.Name)
		}
		for _, cs := range p.Status.ContainerStatuses {
			Expect(cs.RestartCount).To(BeZero(), "%s/%s restarted", p.Name, cs.Name)
		}
	}
	// The disruption controller counts the healthy replicas: the PDB is live.
	Eventually(func(g Gomega) {
		pdb, err := clientset.PolicyV1().PodDisruptionBudgets(system).Get(ctx(10*time.Second), "meterr-auth-server", metav1.GetOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(pdb.Status.CurrentHealthy).To(Equal(authReplicas))
		g.Expect(pdb.Status.DisruptionsAllowed).To(BeNumerically(">=", 1))
	}).WithTimeout(time.Minute).Should(Succeed())
	nps, err := clientset.NetworkingV1().NetworkPolicies(system).List(ctx(30*time.Second), metav1.ListOptions{})
	Expect(err).NotTo(HaveOccurred())
	names := []string{}
	for _, np := range nps.Items {
		names = append(names, np.Name)
	}
	Expect(names).To(ContainElements("meterr-auth-server", "meterr-manager"))
}

// currentKeyID is the key id the MeterrAPIKey's status names.
func currentKeyID(name string) string {
	GinkgoHelper()
	return kubectl("-n", tenant, "get", "mak", name, "-o", "jsonpath={.status.currentKey.id}")
}

// keyFile writes a MeterrAPIKey's current key where the node's load
// generator reads it; the test never prints it.
func keyFile(name string) string {
	GinkgoHelper()
	s, err := clientset.CoreV1().Secrets(tenant).Get(ctx(30*time.Second), name, metav1.GetOptions{})
	Expect(err).NotTo(HaveOccurred())
	Expect(s.Data).To(HaveKey("api-key"))
	p := filepath.Join(GinkgoT().TempDir(), "api-key")
	Expect(os.WriteFile(p, s.Data["api-key"], 0o600)).To(Succeed())
	return p
}

func applyKey(name, spec string) {
	GinkgoHelper()
	apply(fmt.Sprintf("apiVersion: auth.meterr.ai/v1alpha1\nkind: MeterrAPIKey\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, tenant, spec))
	kubectl("-n", tenant, "wait", "--for=condition=Ready", "mak/"+name, "--timeout=60s")
}

func authClusterIP() string {
	GinkgoHelper()
	svc, err := clientset.CoreV1().Services(system).Get(ctx(30*time.Second), "meterr-auth-server", metav1.GetOptions{})
	Expect(err).NotTo(HaveOccurred())
	return svc.Spec.ClusterIP
}

// underLoad runs fn while the node's load generator calls the auth Service
// with a valid key, and returns the requests made from fn's start to its
// end (plus settle), and the quiet ones before, as a baseline.
func underLoad(key string, settle time.Duration, fn func()) (during, before stats) {
	GinkgoHelper()
	// 16 keep-alive connections (kube-proxy balances connections, not
	// requests), each calling every 160 ms: about 100 requests a second.
	l := startLoad("http://"+authClusterIP()+"/v1/auth/verify", keyFile(key), 16, 160*time.Millisecond)
	start := time.Now()
	Eventually(func() []result { return l.results() }).WithTimeout(30*time.Second).Should(ContainElements(
		Satisfy(func(r result) bool { return !r.failed() })), "no answer yet")
	Eventually(func() int { return len(l.results()) }).WithTimeout(30 * time.Second).Should(BeNumerically(">=", 100))
	from := time.Now()
	fn()
	time.Sleep(settle)
	to := time.Now()
	l.stop()
	rs := l.results()
	return window(rs, from, to), window(rs, start, from)
}

var _ = Describe("meterr-operator on a real node", Ordered, func() {
	BeforeAll(func() {
		DeferCleanup(func() {
			// Keys first: their finalizers need the manager.
			_, _ = runErr("", kubectlBin(), "delete", "mak", "--all", "--all-namespaces", "--wait", "--timeout=60s")
			_, _ = runErr("", kubectlBin(), "delete", "namespace", tenant, "--wait", "--timeout=120s")
			_, _ = runErr("", bin("HELM", "helm"), "uninstall", release, "-n", system, "--wait", "--timeout=2m")
			_, _ = runErr("", kubectlBin(), "delete", "namespace", system, "--wait", "--timeout=120s", "--ignore-not-found")
		})
	})

	It("installs from the release bundle (make release: install.yaml and the image tarball) with every pod Ready", func() {
		dir := GinkgoT().TempDir()
		releaseSh, err := filepath.Abs(filepath.Join(repo, "hack", "release.sh"))
		Expect(err).NotTo(HaveOccurred())
		By("make release " + nextVersion + " and importing its image into the node's containerd")
		run("", "env", "IMAGE_REPOSITORY=meterr-operator", "HELM="+bin("HELM", "helm"), releaseSh, nextVersion, dir)
		node("ctr", "images", "import", "--platform", "linux/amd64", filepath.Join(dir, "meterr-operator-image.tar"))

		By("kubectl apply --server-side -f install.yaml")
		run("", kubectlBin(), "apply", "--server-side", "-f", filepath.Join(dir, "install.yaml"))
		expectRunning(3)
		img := kubectl("-n", system, "get", "deployment", "meterr-auth-server", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		Expect(img).To(Equal("meterr-operator:" + nextVersion))

		By("kubectl delete -f install.yaml")
		run("", kubectlBin(), "delete", "-f", filepath.Join(dir, "install.yaml"), "--wait", "--timeout=3m")
	})

	It("installs with helm, from the image make image built, with every pod Ready", func() {
		helm("install", release, filepath.Join(repo, "charts", "meterr-operator"), "-n", system, "--create-namespace",
			"--set", "manager.replicas=2", "--set", "authServer.replicas=2",
			// back-to-back rotations in the next spec
			"--set", "manager.minRotationInterval=1s",
			"--wait", "--timeout=3m")
		expectRunning(2)
		img := kubectl("-n", system, "get", "deployment", "meterr-auth-server", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
		Expect(img).To(Equal("meterr-operator:dev"))
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    meterr.ai/gateway: \"true\"\n", tenant))
	})

	It("delivers a key into a pod's volume, verified through the auth Service by DNS name, and loses no request of a pkg/meterrkey workload across two rotations (default overlap, then 0s)", func() {
		const name = "workload-key"
		applyKey(name, "  permissions: [read]\n  rateLimit: {tier: enterprise}\n")
		apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: workload
  namespace: %s
spec:
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  terminationGracePeriodSeconds: 5
  containers:
  - name: workload
    image: %s
    imagePullPolicy: Never
    args: [--url=http://%s/v1/auth/verify, --key-file=/var/run/secrets/meterr/api-key,
           --workers=2, --interval=50ms, --wait-for-new-key=2m, --stop-on-stdin-close=false]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: key, mountPath: /var/run/secrets/meterr, readOnly: true}
  volumes:
  - name: key
    secret: {secretName: %s}
`, tenant, workloadImage(), authDNS, name))
		ids := []string{currentKeyID(name)}
		Eventually(func(g Gomega) {
			out, err := podLogsErr(tenant, "workload")
			g.Expect(err).NotTo(HaveOccurred())
			rs, _ := parseResults(out)
			ok := 0
			for _, r := range rs {
				if r.Status == 200 && r.KeyID == ids[0] {
					ok++
				}
			}
			g.Expect(ok).To(BeNumerically(">=", 20))
		}).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())

		for i, patch := range []string{
			`{"spec":{"rotation":{"requestedAt":%q}}}`,
			`{"spec":{"rotation":{"overlap":"0s","requestedAt":%q}}}`,
		} {
			requested := time.Now().UTC()
			kubectl("-n", tenant, "patch", "mak", name, "--type=merge", "-p", fmt.Sprintf(patch, requested.Add(-time.Second).Format(time.RFC3339)))
			Eventually(func() string { return currentKeyID(name) }).WithTimeout(time.Minute).ShouldNot(Equal(ids[i]))
			issued := time.Now()
			ids = append(ids, currentKeyID(name))
			var delivered time.Time
			Eventually(func(g Gomega) {
				out, err := podLogsErr(tenant, "workload")
				g.Expect(err).NotTo(HaveOccurred())
				rs, reloads := parseResults(out)
				found := false
				for _, r := range reloads {
					g.Expect(r.Err).To(BeEmpty(), "the workload could not read the key file")
					if r.Reload == ids[i+1] {
						found, delivered = true, time.Unix(0, r.At)
					}
				}
				g.Expect(found).To(BeTrue(), "the kubelet has not delivered rotation %d's key yet", i+1)
				after := 0
				for _, r := range rs {
					if r.started().After(delivered) && r.KeyID == ids[i+1] {
						after++
					}
				}
				g.Expect(after).To(BeNumerically(">=", 10))
			}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
			fmt.Fprintf(GinkgoWriter, "rotation %d: new key issued %s after the request, in the pod's volume %s after that (the kubelet's atomic writer)\n",
				i+1, issued.Sub(requested).Round(time.Millisecond), delivered.Sub(issued).Round(time.Millisecond))
		}

		rs, _ := parseResults(podLogs(tenant, "workload"))
		s := window(rs, time.Time{}, time.Now())
		expectNoFailures("the workload across two rotations", s)
		retried := 0
		for _, r := range rs {
			Expect(r.Attempts).To(BeNumerically("<=", 2), "a request was sent more than twice: %s", r)
			if r.Attempts == 2 {
				retried++
			}
		}
		fmt.Fprintf(GinkgoWriter, "workload pod across two rotations: %s; %d retried once after expired_api_key\n", s, retried)
		Expect(clientset.CoreV1().Pods(tenant).Delete(ctx(30*time.Second), "workload", metav1.DeleteOptions{})).To(Succeed())
	})

	It("answers every request during helm upgrade to a new image tag (a rolling update of both Deployments)", func() {
		applyKey("load-key", "  permissions: [read]\n  rateLimit: {tier: enterprise}\n")
		during, before := underLoad("load-key", 2*time.Second, func() {
			helm("upgrade", release, filepath.Join(repo, "charts", "meterr-operator"), "-n", system, "--reuse-values",
				"--set", "image.tag="+nextVersion, "--wait", "--timeout=5m")
			kubectl("-n", system, "rollout", "status", "deployment/meterr-auth-server", "--timeout=3m")
			kubectl("-n", system, "rollout", "status", "deployment/meterr-manager", "--timeout=3m")
		})
		fmt.Fprintf(GinkgoWriter, "helm upgrade under load: %s (before it: %s)\n", during, before)
		expectNoFailures("helm upgrade", during)
		expectRunning(2)
		for _, d := range []string{"meterr-auth-server", "meterr-manager"} {
			img := kubectl("-n", system, "get", "deployment", d, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
			Expect(img).To(Equal("meterr-operator:" + nextVersion))
		}
	})

	It("answers every request while an auth server pod is deleted", func() {
		during, _ := underLoad("load-key", 2*time.Second, func() {
			pods := podsOf(system, "auth-server")
			var victim string
			for p := range pods {
				victim = p
				break
			}
			Expect(clientset.CoreV1().Pods(system).Delete(ctx(30*time.Second), victim, metav1.DeleteOptions{})).To(Succeed())
			Eventually(func() error {
				_, err := clientset.CoreV1().Pods(system).Get(ctx(10*time.Second), victim, metav1.GetOptions{})
				return err
			}).WithTimeout(2 * time.Minute).Should(Satisfy(apierrors.IsNotFound))
			kubectl("-n", system, "rollout", "status", "deployment/meterr-auth-server", "--timeout=2m")
		})
		fmt.Fprintf(GinkgoWriter, "auth server pod deleted under load: %s\n", during)
		expectNoFailures("an auth server pod deleted", during)
	})

	It("hands the lease to another manager replica when the leader's pod is deleted; a key applied after is issued", func() {
		holder := func() string {
			l, err := clientset.CoordinationV1().Leases(system).Get(ctx(10*time.Second), leaseName, metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil {
				return ""
			}
			return strings.SplitN(*l.Spec.HolderIdentity, "_", 2)[0]
		}
		leader := holder()
		pods := podsOf(system, "manager")
		Expect(pods).To(HaveKey(leader))
		Expect(pods).To(HaveLen(2))
		Expect(clientset.CoreV1().Pods(system).Delete(ctx(30*time.Second), leader, metav1.DeleteOptions{})).To(Succeed())
		deleted := time.Now()
		apply(fmt.Sprintf("apiVersion: auth.meterr.ai/v1alpha1\nkind: MeterrAPIKey\nmetadata:\n  name: after-failover\n  namespace: %s\nspec:\n  permissions: [read]\n", tenant))
		kubectl("-n", tenant, "wait", "--for=condition=Ready", "mak/after-failover", "--timeout=2m")
		issued := time.Since(deleted)
		newLeader := holder()
		Expect(newLeader).NotTo(Equal(leader))
		// The replica standing by and the Deployment's replacement race for
		// the released lease; either may win.
		who := "the standing-by replica"
		if _, ok := pods[newLeader]; !ok {
			who = "the replacement pod"
		}
		_, err := clientset.CoreV1().Secrets(tenant).Get(ctx(10*time.Second), "after-failover", metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		kubectl("-n", system, "rollout", "status", "deployment/meterr-manager", "--timeout=2m")
		fmt.Fprintf(GinkgoWriter, "manager failover: %s (%s) took the lease; a key applied after the deletion was Ready %s after it\n",
			newLeader, who, issued.Round(time.Millisecond))
	})

	for _, daemon := range []string{"containerd", "kubelet"} {
		It(fmt.Sprintf("keeps answering while %s is down for 20 s, and loses nothing when it is back", daemon), func() {
			kubectl("-n", system, "rollout", "status", "deployment/meterr-manager", "--timeout=2m")
			kubectl("-n", system, "rollout", "status", "deployment/meterr-auth-server", "--timeout=2m")
			auth, manager := podsOf(system, "auth-server"), podsOf(system, "manager")
			counted := decisions(system, "auth-server")
			during, _ := underLoad("load-key", 2*time.Second, func() {
				node("kill", daemon)
				time.Sleep(20 * time.Second) // the fault's length, not a timing under test
				node("start", daemon)
				if daemon == "containerd" {
					Eventually(func() error {
						_, err := runErr("", filepath.Join(repo, "hack", "cluster", "node.sh"), "ctr", "version")
						return err
					}).
						WithTimeout(time.Minute).Should(Succeed())
				}
				kubectl("wait", "--for=condition=Ready", "node/meterr-node", "--timeout=2m")
			})
			fmt.Fprintf(GinkgoWriter, "%s down for 20 s under load: %s\n", daemon, during)
			fmt.Fprintf(GinkgoWriter, "auth server CPU throttling since start (limit %s): %s\n",
				kubectl("-n", system, "get", "deployment", "meterr-auth-server", "-o", "jsonpath={.spec.template.spec.containers[0].resources.limits.cpu}"),
				throttling(system, "auth-server"))
			expectNoFailures(daemon+" down", during)
			Expect(podsOf(system, "auth-server")).To(Equal(auth), "the auth server pods changed")
			// kube-proxy balanced the load over both replicas.
			after := decisions(system, "auth-server")
			Expect(after).To(HaveLen(len(counted)))
			for pod, n := range after {
				Expect(n).To(BeNumerically(">", counted[pod]), "auth server pod %s answered nothing through the Service", pod)
			}
			fmt.Fprintf(GinkgoWriter, "decisions per auth server pod, before and after: %v -> %v\n", counted, after)
			Expect(podsOf(system, "manager")).To(Equal(manager), "the manager pods changed")
			// The node still runs new work: a key issued now reaches a pod.
			name := "after-" + daemon
			applyKey(name, "  permissions: [read]\n")
			Expect(podLogs(system, firstKey(auth))).NotTo(BeEmpty())
		})
	}

	It("puts Caddy, configured from docs/integrations/caddy/Caddyfile, in front of an upstream: a valid key reaches it, refusals are the documented 401, 403 and 429", func() {
		raw, err := os.ReadFile(filepath.Join(repo, "docs", "integrations", "caddy", "Caddyfile"))
		Expect(err).NotTo(HaveOccurred())
		caddyfile := strings.NewReplacer("${METERR_AUTH}", authDNS+":80",
			"${UPSTREAM}", "upstream."+tenant+".svc.cluster.local:8080", "${LISTEN}", "8080").Replace(string(raw))
		Expect(caddyfile).NotTo(ContainSubstring("${"))
		indented := "    " + strings.ReplaceAll(caddyfile, "\n", "\n    ")
		apply(fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: caddy, namespace: %[1]s}
data:
  Caddyfile: |
%[2]s
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: upstream, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: upstream}}
  template:
    metadata: {labels: {app: upstream}}
    spec:
      containers:
      - name: upstream
        image: %[3]s
        imagePullPolicy: Never
        args: [serve, --addr=:8080]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: upstream, namespace: %[1]s}
spec:
  selector: {app: upstream}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: caddy, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: caddy}}
  template:
    metadata: {labels: {app: caddy}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: caddy
        image: %[4]s
        imagePullPolicy: Never
        args: [run, --config, /etc/caddy/Caddyfile, --adapter, caddyfile]
        env:
        - {name: XDG_DATA_HOME, value: /tmp/data}
        - {name: XDG_CONFIG_HOME, value: /tmp/config}
        - {name: HOME, value: /tmp}
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts:
        - {name: config, mountPath: /etc/caddy}
        - {name: tmp, mountPath: /tmp}
      volumes:
      - name: config
        configMap: {name: caddy}
      - name: tmp
        emptyDir: {}
---
apiVersion: v1
kind: Service
metadata: {name: caddy, namespace: %[1]s}
spec:
  selector: {app: caddy}
  ports: [{port: 8080, targetPort: 8080}]
`, tenant, indented, smokeImage(), caddyImage()))
		kubectl("-n", tenant, "rollout", "status", "deployment/upstream", "--timeout=2m")
		kubectl("-n", tenant, "rollout", "status", "deployment/caddy", "--timeout=2m")
		svc, err := clientset.CoreV1().Services(tenant).Get(ctx(10*time.Second), "caddy", metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		url := "http://" + svc.Spec.ClusterIP + ":8080/orders"

		applyKey("caddy-key", "  permissions: [read]\n")
		applyKey("caddy-domain", "  permissions: [read]\n  restrictions:\n    domains: [app.example.com]\n")
		applyKey("caddy-limited", "  permissions: [read]\n  rateLimit: {requestsPerHour: 2}\n")

		// curl from the node, the key in a header file (never on a command line).
		curl := func(key string, headers ...string) (status int, body string, hdr string) {
			GinkgoHelper()
			args := []string{"curl", "-sS", "--max-time", "10", "-D", "-", "-o", "-", url}
			if key != "" {
				h := filepath.Join(GinkgoT().TempDir(), "h")
				k, err := os.ReadFile(keyFile(key))
				Expect(err).NotTo(HaveOccurred())
				Expect(os.WriteFile(h, append([]byte("Authorization: Bearer "), k...), 0o600)).To(Succeed())
				args = append(args, "-H", "@"+h)
			}
			for _, h := range headers {
				args = append(args, "-H", h)
			}
			out := node(append([]string{"exec"}, args...)...)
			head, body, _ := strings.Cut(out, "\r\n\r\n")
			_, err := fmt.Sscanf(head, "HTTP/1.1 %d", &status)
			Expect(err).NotTo(HaveOccurred(), head)
			return status, body, head
		}

		status, body, _ := curl("caddy-key")
		Expect(status).To(Equal(200), body)
		Expect(body).To(HavePrefix("upstream-"), "the upstream pod's hostname")

		status, body, head := curl("")
		Expect(status).To(Equal(401))
		Expect(body).To(ContainSubstring(`"code":"invalid_api_key"`))
		Expect(strings.ToLower(head)).To(ContainSubstring("www-authenticate: bearer"))

		status, body, _ = curl("caddy-domain", "Origin: https://elsewhere.example.org")
		Expect(status).To(Equal(403))
		Expect(body).To(ContainSubstring(`"code":"domain_not_allowed"`))
		status, body, _ = curl("caddy-domain", "Origin: https://app.example.com")
		Expect(status).To(Equal(200), body)

		// Without Redis each auth server replica counts on its own: at most
		// replicas x limit requests pass (docs/auth-server.md).
		got429 := false
		for range 2*2 + 1 {
			status, body, head = curl("caddy-limited")
			if status == 429 {
				got429 = true
				break
			}
			Expect(status).To(Equal(200), body)
		}
		Expect(got429).To(BeTrue(), "no 429 after replicas x limit + 1 requests")
		Expect(body).To(ContainSubstring(`"code":"rate_limit_exceeded"`))
		Expect(strings.ToLower(head)).To(ContainSubstring("retry-after:"))
	})
})

func firstKey(m map[string]string) string {
	for k := range m {
		return k
	}
	return ""
}
