// Package e2e runs the real meterr-operator binary as separate processes
// against a local control plane and talks to it as a user would: kubectl and
// plain HTTP.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meterr/meterr-operator/test/testenv"
)

var (
	testEnv  *testenv.Env
	workDir  string
	binary   string
	kubectlB string
	// kubeconfigs of the admin and of each component's service account.
	adminKC, managerKC, authKC string
	authURL                    string
	authListen, authMetrics    string
	// The second auth server replica (last used).
	authListen2, authMetrics2 string
	authServer2               *proc
	managerMetrics            string
	manager, authServer       *proc
	// keysSeen collects every plaintext key the tests read, for the final leak check.
	keysSeen   []string
	keysSeenMu sync.Mutex
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end Suite")
}

// proc is a component running as its own process, its output in a file.
type proc struct {
	name    string
	args    []string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func startProc(name string, args ...string) *proc {
	p := &proc{name: name, args: args, logPath: filepath.Join(workDir, name+".log")}
	p.start()
	return p
}

func (p *proc) start() {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	Expect(err).NotTo(HaveOccurred())
	p.cmd = exec.Command(binary, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	Expect(p.cmd.Start()).To(Succeed())
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); logFile.Close(); close(p.done) }()
}

// kill stops the process at once, as a crash or an OOM kill would.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop asks the process to shut down gracefully.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

func (p *proc) logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

// kubectl runs kubectl with a kubeconfig, stdin optional.
func kubectlAs(kubeconfig, stdin string, args ...string) (string, error) {
	cmd := exec.Command(kubectlB, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

func kubectl(args ...string) string {
	out, err := kubectlAs(adminKC, "", args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return out
}

func apply(manifest string) {
	_, err := kubectlAs(adminKC, manifest, "apply", "-f", "-")
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

func writeKubeconfig(name string, user envtest.User) string {
	path, _, err := testEnv.AddUser(name, user)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return path
}

func serviceAccount(name string) envtest.User {
	return testenv.ServiceAccount("meterr-system", name)
}

func waitHTTPReady(url string) {
	ExpectWithOffset(1, testenv.WaitHTTP(context.Background(), url, 30*time.Second, 50*time.Millisecond, nil)).To(Succeed())
}

var _ = BeforeSuite(func() {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	Expect(assets).NotTo(BeEmpty(), "KUBEBUILDER_ASSETS must point at etcd, kube-apiserver and kubectl (make envtest-assets)")
	kubectlB = filepath.Join(assets, "kubectl")
	var err error
	workDir, err = os.MkdirTemp("", "meterr-e2e-")
	Expect(err).NotTo(HaveOccurred())

	By("building the binary")
	binary = filepath.Join(workDir, "meterr-operator")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Dir = filepath.Join("..", "..")
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))

	By("starting the local control plane")
	testEnv, err = testenv.Start(testenv.Options{Assets: assets, Dir: workDir, Admin: "e2e-admin"})
	Expect(err).NotTo(HaveOccurred())
	adminKC = testEnv.Kubeconfig

	By("server-side dry-run of every shipped manifest, then installing them with kubectl")
	manifests := kubectl("kustomize", filepath.Join("..", "..", "config", "default"))
	// A dry-run creates nothing, so the namespace the bundle installs into
	// must exist before the rest can be dry-run.
	kubectl("create", "namespace", "meterr-system")
	_, err = kubectlAs(adminKC, manifests, "apply", "--server-side", "--dry-run=server", "-f", "-")
	Expect(err).NotTo(HaveOccurred())
	_, err = kubectlAs(adminKC, manifests, "apply", "--server-side", "-f", "-")
	Expect(err).NotTo(HaveOccurred())
	kubectl("wait", "--for=condition=Established", "crd/meterrapikeys.auth.meterr.ai", "--timeout=30s")
	samples := kubectl("kustomize", filepath.Join("..", "..", "config", "samples"))
	_, err = kubectlAs(adminKC, samples, "apply", "--server-side", "--dry-run=server", "-n", "default", "-f", "-")
	Expect(err).NotTo(HaveOccurred())

	managerKC = writeKubeconfig("manager", serviceAccount("meterr-manager"))
	authKC = writeKubeconfig("auth-server", serviceAccount("meterr-auth-server"))

	By("starting the manager and the auth server as separate processes, each as its own service account")
	// Last used (lastused_test.go): a second auth server replica, both
	// serving the usage report with a token the manager presents; the
	// manager is given their metrics ports (an EndpointSlice may not hold
	// a loopback address).
	usageToken := filepath.Join(workDir, "usage-token")
	Expect(os.WriteFile(usageToken, []byte("e2e-usage-token\n"), 0o600)).To(Succeed())
	authListen, authMetrics = freeAddr(), freeAddr()
	authListen2, authMetrics2 = freeAddr(), freeAddr()
	managerMetrics = freeAddr()
	manager = startProc("manager", "manager", "--kubeconfig", managerKC,
		"--leader-elect", "--leader-election-namespace", "meterr-system",
		// Specs request rotations seconds apart.
		"--min-rotation-interval", "1s",
		"--metrics-bind-address", managerMetrics, "--health-probe-bind-address", freeAddr(),
		// The secret-scanning intakes (intake_test.go).
		"--leak-intake-listen", intakeListen(), "--gitlab-revocation-token-file", gitlabTokenFile(),
		"--github-public-keys-file", githubKeysFile(),
		// Last used (lastused_test.go).
		"--usage-token-file", usageToken, "--usage-endpoints", authMetrics+","+authMetrics2, "--last-used-interval", "5s")
	authURL = "http://" + authListen
	authServer = startProc("auth-server", "auth-server", "--kubeconfig", authKC,
		"--listen", authListen, "--metrics-bind-address", authMetrics,
		// Refusals are explained in the log (whois_test.go checks a line).
		"--log-decisions=denied", "--usage-token-file", usageToken)
	authServer2 = startProc("auth-server-2", "auth-server", "--kubeconfig", authKC,
		"--listen", authListen2, "--metrics-bind-address", authMetrics2, "--usage-token-file", usageToken)
	waitHTTPReady(authURL + "/readyz")
	waitHTTPReady("http://" + authListen2 + "/readyz")
})

var _ = AfterSuite(func() {
	for _, p := range []*proc{manager, authServer, authServer2} {
		if p != nil {
			p.stop()
		}
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

var _ = ReportAfterSuite("process logs on failure", func(r Report) {
	if r.SuiteSucceeded {
		_ = os.RemoveAll(workDir)
		return
	}
	fmt.Fprintf(GinkgoWriter, "logs and kubeconfigs kept in %s\n", workDir)
	for _, p := range []*proc{manager, authServer, authServer2} {
		if p != nil {
			fmt.Fprintf(GinkgoWriter, "---- %s log (tail) ----\n%s\n", p.name, tail(p.logs(), 4000))
		}
	}
})

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
