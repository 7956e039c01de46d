package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// repo is the repository's root, from this package's directory.
var repo = filepath.Join("..", "..")

// bin finds a tool: $ENV if set, else its place under bin/.
func bin(env string, rel ...string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join(append([]string{repo, "bin"}, rel...)...))
	Expect(err).NotTo(HaveOccurred())
	return p
}

func kubectlBin() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return filepath.Join(d, "kubectl")
	}
	return bin("KUBECTL", "k8s", "1.37.2", "kubectl")
}

// run runs a command as a user would, with the cluster's kubeconfig, and
// returns its standard output; a failure shows its standard error.
func run(stdin string, name string, args ...string) string {
	GinkgoHelper()
	out, err := runErr(stdin, name, args...)
	Expect(err).NotTo(HaveOccurred(), "%s %s", filepath.Base(name), strings.Join(args, " "))
	return out
}

func runErr(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+os.Getenv(KubeconfigEnv))
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

func kubectl(args ...string) string {
	GinkgoHelper()
	return run("", kubectlBin(), args...)
}

func apply(manifest string) {
	GinkgoHelper()
	run(manifest, kubectlBin(), "apply", "--server-side", "--field-manager=test-cluster", "-f", "-")
}

func helm(args ...string) string {
	GinkgoHelper()
	return run("", bin("HELM", "helm"), args...)
}

// node runs hack/cluster/node.sh: kill and start the node's daemons, ctr.
func node(args ...string) string {
	GinkgoHelper()
	p, err := filepath.Abs(filepath.Join(repo, "hack", "cluster", "node.sh"))
	Expect(err).NotTo(HaveOccurred())
	return run("", p, args...)
}

// result is one line of test/e2e/workload's output: a request, or a key
// reload.
type result struct {
	Worker   int    `json:"worker"`
	Start    int64  `json:"start"`
	End      int64  `json:"end"`
	Status   int    `json:"status"`
	KeyID    string `json:"key_id"`
	Code     string `json:"code"`
	Attempts int32  `json:"attempts"`
	Err      string `json:"err"`
	Reload   string `json:"reload"`
	At       int64  `json:"at"`
}

func (r result) started() time.Time { return time.Unix(0, r.Start) }

func (r result) failed() bool { return r.Err != "" || r.Status != 200 }

func (r result) String() string {
	return fmt.Sprintf("worker %d at %s: status %d code %q err %q after %s, %d attempt(s)",
		r.Worker, r.started().Format("15:04:05.000"), r.Status, r.Code, r.Err, time.Duration(r.End-r.Start), r.Attempts)
}

func parseResults(out string) (requests, reloads []result) {
	GinkgoHelper()
	for _, raw := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(raw, "{") {
			continue
		}
		var r result
		Expect(json.Unmarshal([]byte(raw), &r)).To(Succeed(), raw)
		if r.At != 0 {
			reloads = append(reloads, r)
		} else {
			requests = append(requests, r)
		}
	}
	return requests, reloads
}

// stats is what a window of requests shows.
type stats struct {
	n      int
	failed []result
	p50    time.Duration
	p99    time.Duration
	max    time.Duration
}

func (s stats) String() string {
	return fmt.Sprintf("%d requests, %d failed, p50 %s, p99 %s, max %s", s.n, len(s.failed),
		s.p50.Round(10*time.Microsecond), s.p99.Round(10*time.Microsecond), s.max.Round(10*time.Microsecond))
}

// window summarises the requests that started in [from, to].
func window(rs []result, from, to time.Time) stats {
	var s stats
	var lat []time.Duration
	for _, r := range rs {
		if t := r.started(); t.Before(from) || t.After(to) {
			continue
		}
		s.n++
		if r.failed() {
			s.failed = append(s.failed, r)
		}
		lat = append(lat, time.Duration(r.End-r.Start))
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		s.p50 = lat[len(lat)/2]
		s.p99 = lat[(len(lat)*99)/100]
		s.max = lat[len(lat)-1]
	}
	return s
}

// loadGen is test/e2e/workload run on the node, in its network namespace
// (as a gateway on hostNetwork is): its requests reach the auth Service
// through kube-proxy, and its output comes here through a pipe, not through
// the container runtime a fault test stops.
type loadGen struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   strings.Builder
	done  chan struct{}
}

func startLoad(url, keyFile string, workers int, interval time.Duration) *loadGen {
	GinkgoHelper()
	nodeSh, err := filepath.Abs(filepath.Join(repo, "hack", "cluster", "node.sh"))
	Expect(err).NotTo(HaveOccurred())
	l := &loadGen{done: make(chan struct{})}
	l.cmd = exec.Command(nodeSh, "exec", bin("METERR_CLUSTER_WORKLOAD", "cluster", "tools", "workload"),
		"--url", url, "--key-file", keyFile, "--workers", fmt.Sprint(workers), "--interval", interval.String())
	l.stdin, err = l.cmd.StdinPipe()
	Expect(err).NotTo(HaveOccurred())
	stdout, err := l.cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	l.cmd.Stderr = GinkgoWriter
	Expect(l.cmd.Start()).To(Succeed())
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.mu.Lock()
			l.out.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
		}
	}()
	DeferCleanup(l.stop)
	return l
}

func (l *loadGen) results() []result {
	GinkgoHelper()
	l.mu.Lock()
	out := l.out.String()
	l.mu.Unlock()
	rs, _ := parseResults(out)
	return rs
}

func (l *loadGen) stop() {
	if l.stdin == nil {
		return
	}
	_ = l.stdin.Close()
	l.stdin = nil
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
	}
	_ = l.cmd.Wait()
}

// podLogs reads a pod's whole log through the API server and the kubelet.
func podLogs(ns, name string) string {
	GinkgoHelper()
	out, err := podLogsErr(ns, name)
	Expect(err).NotTo(HaveOccurred())
	return out
}

func podLogsErr(ns, name string) (string, error) {
	raw, err := clientset.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx(30 * time.Second))
	return string(raw), err
}

// expectNoFailures fails with the first few failed requests of s.
func expectNoFailures(what string, s stats) {
	GinkgoHelper()
	var b strings.Builder
	for i, r := range s.failed {
		if i == 10 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(s.failed)-10)
			break
		}
		fmt.Fprintf(&b, "  %s\n", r)
	}
	Expect(s.failed).To(BeEmpty(), "%s: %s:\n%s", what, s, b.String())
	Expect(s.n).To(BeNumerically(">", 0), "%s: no request was made", what)
}

// podsOf lists the Running pods of a component, by name, with their UID
// and restart count.
func podsOf(ns, component string) map[string]string {
	GinkgoHelper()
	list, err := clientset.CoreV1().Pods(ns).List(ctx(30*time.Second), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=" + component,
	})
	Expect(err).NotTo(HaveOccurred())
	pods := map[string]string{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		restarts := int32(0)
		for _, c := range p.Status.ContainerStatuses {
			restarts += c.RestartCount
		}
		pods[p.Name] = fmt.Sprintf("%s restarts=%d phase=%s", p.UID, restarts, p.Status.Phase)
	}
	return pods
}

// throttling reports the CFS throttling of a component's pods, read from
// the node's cgroups (cgroup v1, the kubelet's cgroupRoot meterr-cluster):
// a CPU limit too tight for the load shows as throttled periods.
func throttling(ns, component string) string {
	GinkgoHelper()
	list, err := clientset.CoreV1().Pods(ns).List(ctx(30*time.Second), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=" + component,
	})
	Expect(err).NotTo(HaveOccurred())
	var b strings.Builder
	for _, p := range list.Items {
		matches, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/cpu/meterr-cluster/kubepods/*/pod%s/cpu.stat", p.UID))
		if len(matches) == 0 {
			continue
		}
		raw, err := os.ReadFile(matches[0])
		if err != nil {
			continue
		}
		st := map[string]string{}
		for _, l := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(l, " "); ok {
				st[k] = v
			}
		}
		fmt.Fprintf(&b, "%s: %s of %s periods throttled (%s ns); ", p.Name, st["nr_throttled"], st["nr_periods"], st["throttled_time"])
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// decisions sums meterr_auth_decisions_total of each of a component's
// pods, read from its metrics port by curl on the node.
func decisions(ns, component string) map[string]float64 {
	GinkgoHelper()
	list, err := clientset.CoreV1().Pods(ns).List(ctx(30*time.Second), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=" + component,
	})
	Expect(err).NotTo(HaveOccurred())
	out := map[string]float64{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		text := node("exec", "curl", "-sS", "--max-time", "10", "http://"+p.Status.PodIP+":9090/metrics")
		sum := 0.0
		for _, l := range strings.Split(text, "\n") {
			if !strings.HasPrefix(l, "meterr_auth_decisions_total") {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
		out[p.Name] = sum
	}
	return out
}
