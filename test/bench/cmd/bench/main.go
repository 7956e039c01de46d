// Command bench is the harness behind `make bench` (hack/bench.sh): it starts
// local control planes, loads key records, runs the auth server binary beside
// a bare net/http handler under a load generator, measures propagation of
// record changes, runs the manager binary against fleets of MeterrAPIKeys,
// and writes a Markdown report with every figure beside a baseline measured
// in the same run.
//
// It fails (exit 1) only when the harness or the system under test breaks:
// a server that does not start, a valid key refused, an unknown key accepted.
// Figures that miss their targets are reported, not failed: benchmarks are
// not timed tests.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meterr/meterr-operator/test/testenv"
)

type config struct {
	smoke        bool
	out          string
	work         string
	bin, bareBin string
	// authBin is the slim auth server binary (cmd/meterr-auth-server) the
	// Deployments run; the "after" auth servers run it when set, and the
	// full binary's `auth-server` is measured beside it.
	authBin      string
	loadBin, wrk string
	kubectl      string
	assets       string
	crdDir       string
	goBench      string
	goCompare    string

	smallKeys, largeKeys int
	probeKeys            int
	duration             time.Duration
	conns                int
	rounds               int
	createWorkers        int
	propSamples          int
	applySamples         int
	ctrlKeys             int
	ctrlTimeout          time.Duration
	pollInterval         time.Duration
	serverCPUs, loadCPUs string

	// baseBin is the base revision's meterr-operator (the "before" of the
	// report), measured in the same rounds as bin; empty: no before.
	baseBin, baseRev string
	// unpinned adds the throughput rounds without taskset.
	unpinned bool
	// fleetBase runs the fleet again with the base revision's manager.
	fleetBase bool
	// fleetFloor replays the manager's writes with the harness alone before
	// the fleet: the fastest the fleet could be with those writes.
	fleetFloor bool

	managerQPS, managerBurst, managerConcurrency int
	skipController                               bool
	skipAuth                                     bool

	// pprofBin, when set, runs the manager and the auth server through
	// test/bench/cmd/pprofwrap and saves CPU and heap profiles to profileDir.
	pprofBin   string
	profileDir string
	// authEnv is extra environment of the auth server processes
	// (GOMEMLIMIT, GOGC, GODEBUG experiments).
	authEnv stringList
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

type harness struct {
	cfg   config
	procs *procs
	res   *results
	start time.Time
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %5.1fs] "+format+"\n", append([]any{time.Since(h.start).Seconds()}, args...)...)
}

func main() {
	var c config
	flag.BoolVar(&c.smoke, "smoke", false, "Tiny sizes: checks that the harness works; timing is not judged.")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "Markdown report to write.")
	flag.StringVar(&c.work, "work", "", "Private temporary directory for logs, kubeconfigs and key files (required).")
	flag.StringVar(&c.bin, "bin", "bin/meterr-operator", "The meterr-operator binary.")
	flag.StringVar(&c.authBin, "auth-bin", "", "The meterr-auth-server binary (the auth server alone); the after side's auth servers run it, and -bin's auth-server beside it. Empty: -bin's auth-server.")
	flag.StringVar(&c.bareBin, "bare", "", "The bare baseline server binary (test/bench/cmd/bare).")
	flag.StringVar(&c.loadBin, "load", "", "The Go load generator binary (test/bench/cmd/load), used when -wrk is empty.")
	flag.StringVar(&c.wrk, "wrk", "", "wrk binary; empty uses the Go load generator.")
	flag.StringVar(&c.kubectl, "kubectl", "", "kubectl binary (default: <assets>/kubectl).")
	flag.StringVar(&c.assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory with etcd, kube-apiserver and kubectl.")
	flag.StringVar(&c.crdDir, "crd-dir", "config/crd/bases", "CRDs to install.")
	flag.StringVar(&c.goBench, "go-bench", "", "Output of the Go benchmarks to include.")
	flag.StringVar(&c.goCompare, "go-compare", "", "Output of hack/bench-compare.sh (benchstat, base vs now) to include.")
	flag.IntVar(&c.smallKeys, "keys-small", 1000, "Keys of the small index.")
	flag.IntVar(&c.largeKeys, "keys-large", 100_000, "Keys of the large index.")
	flag.IntVar(&c.probeKeys, "probe-keys", 1000, "Distinct keys each load run cycles through.")
	flag.DurationVar(&c.duration, "duration", 4*time.Second, "Length of each load run.")
	flag.IntVar(&c.conns, "conns", 32, "Load generator connections (keep-alive).")
	flag.IntVar(&c.rounds, "rounds", 5, "Rounds of interleaved load runs; min, median and max are reported.")
	flag.StringVar(&c.baseBin, "base-bin", "", "meterr-operator binary of the base revision, measured beside -bin in the same rounds (the report's before).")
	flag.StringVar(&c.baseRev, "base-rev", "", "The base revision's name in the report.")
	flag.BoolVar(&c.unpinned, "unpinned", true, "Also measure throughput unpinned (no taskset, GOMAXPROCS the machine's).")
	flag.BoolVar(&c.fleetBase, "fleet-base", false, "Run the fleet (10,000 keys Ready, rotation wave) with the base revision's manager too, on a control plane of its own (doubles the controller phase).")
	flag.BoolVar(&c.fleetFloor, "fleet-floor", true, "Before the fleet, replay the manager's writes for as many keys with the harness alone (the fleet's floor; adds about 4 minutes).")
	flag.IntVar(&c.createWorkers, "create-workers", 64, "Concurrent creates when loading records and keys.")
	flag.IntVar(&c.propSamples, "prop-samples", 300, "Samples of each record-change propagation.")
	flag.IntVar(&c.applySamples, "apply-samples", 100, "Samples of MeterrAPIKey create -> key accepted.")
	flag.IntVar(&c.ctrlKeys, "controller-keys", 10_000, "MeterrAPIKeys of the controller scale test.")
	flag.DurationVar(&c.ctrlTimeout, "controller-timeout", 6*time.Minute, "Longest wait for all keys Ready, and again for all rotated.")
	flag.DurationVar(&c.pollInterval, "poll-interval", time.Millisecond, "Polling interval of the propagation measurements.")
	flag.StringVar(&c.serverCPUs, "server-cpus", "", "CPUs (taskset list) of the measured servers; empty: 0 on a machine with 2+ CPUs.")
	flag.StringVar(&c.loadCPUs, "load-cpus", "", "CPUs of the load generator; empty: the last CPU on a machine with 2+ CPUs.")
	flag.IntVar(&c.managerQPS, "manager-qps", 2000, "The manager's --kube-api-qps.")
	flag.IntVar(&c.managerBurst, "manager-burst", 4000, "The manager's --kube-api-burst.")
	flag.IntVar(&c.managerConcurrency, "manager-concurrency", 16, "The manager's --max-concurrent-reconciles.")
	flag.BoolVar(&c.skipController, "skip-controller", false, "Skip the manager phase (for quick iterations).")
	flag.BoolVar(&c.skipAuth, "skip-auth", false, "Skip the auth server phase (for quick iterations).")
	flag.StringVar(&c.pprofBin, "pprof", "", "test/bench/cmd/pprofwrap binary: profile the manager and the auth server (same code, plus net/http/pprof).")
	flag.Var(&c.authEnv, "auth-env", "KEY=VALUE added to the auth servers' environment (repeatable), e.g. GOMEMLIMIT=90MiB.")
	flag.StringVar(&c.profileDir, "profile-dir", "", "Where -pprof saves profiles (default <work>/profiles).")
	flag.Parse()

	if c.work == "" {
		fmt.Fprintln(os.Stderr, "bench: -work is required")
		os.Exit(2)
	}
	if c.profileDir == "" {
		c.profileDir = filepath.Join(c.work, "profiles")
	}
	if c.kubectl == "" {
		c.kubectl = filepath.Join(c.assets, "kubectl")
	}
	if c.serverCPUs == "" && c.loadCPUs == "" && runtime.NumCPU() >= 2 {
		c.serverCPUs, c.loadCPUs = "0", strconv.Itoa(runtime.NumCPU()-1)
	}

	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if c.baseBin != "" && c.baseRev == "" {
		c.baseRev = c.baseBin
	}
	h := &harness{cfg: c, start: time.Now(), res: newResults(c)}
	taskset, _ := exec.LookPath("taskset")
	if c.serverCPUs == "" && c.loadCPUs == "" {
		taskset = ""
	}
	h.procs = &procs{dir: c.work, pidsFile: filepath.Join(c.work, "pids"), taskset: taskset}
	err := h.run(ctx)
	h.procs.stopAll()
	_ = os.RemoveAll(filepath.Join(c.work, "keys"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

func (h *harness) run(ctx context.Context) error {
	h.res.loadStart = loadAvg()
	if h.cfg.goBench != "" {
		if err := h.res.readGoBench(h.cfg.goBench); err != nil {
			return err
		}
	}
	if !h.cfg.skipAuth {
		if err := h.authPhase(ctx); err != nil {
			return fmt.Errorf("auth server phase: %w", err)
		}
	}
	if !h.cfg.skipController {
		if err := h.controllerPhase(ctx); err != nil {
			return fmt.Errorf("controller phase: %w", err)
		}
	}
	h.res.loadEnd = loadAvg()
	h.res.finished = time.Now()
	report := h.res.markdown()
	if err := os.WriteFile(h.cfg.out, []byte(report), 0o644); err != nil {
		return err
	}
	h.logf("report written to %s", h.cfg.out)
	fmt.Println(h.res.table())
	return nil
}

// controlPlane is a local etcd and kube-apiserver (test/testenv, shared with
// the test suites), with a fast client of its admin.
type controlPlane struct {
	env        *testenv.Env
	cfg        *rest.Config
	kubeconfig string
	cs         kubernetes.Interface
}

func (h *harness) startControlPlane(name string) (*controlPlane, error) {
	dir := filepath.Join(h.cfg.work, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	env, err := testenv.Start(testenv.Options{Assets: h.cfg.assets, Dir: dir, Admin: "bench",
		StartTimeout: 90 * time.Second, StopTimeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	h.procs.recordChildren()
	cp := &controlPlane{env: env, kubeconfig: env.Kubeconfig, cfg: rest.CopyConfig(env.Config)}
	cp.cfg.QPS, cp.cfg.Burst = 5000, 10000
	cp.cfg.ContentType = "application/vnd.kubernetes.protobuf"
	if cp.cs, err = kubernetes.NewForConfig(cp.cfg); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return cp, nil
}

func (h *harness) stopControlPlane(cp *controlPlane) {
	// Its clients first, or the API server waits for their watches.
	h.procs.stopAll()
	t := time.Now()
	if err := cp.env.Stop(); err != nil {
		h.logf("stopping the control plane: %v", err)
	}
	h.logf("control plane stopped in %s", time.Since(t).Round(time.Millisecond))
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// authServer is a running auth server.
type authServer struct {
	p     *proc
	addr  string
	ready time.Duration
	pprof string // base URL of net/http/pprof with -pprof
	// metrics is the URL of its Prometheus endpoint.
	metrics string
}

// heapInuse reads go_memstats_heap_inuse_bytes from the auth server's
// metrics.
func (a *authServer) heapInuse(ctx context.Context) int64 {
	body, err := httpGet(ctx, a.metrics)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f)
		}
	}
	return 0
}

// binary returns the argv prefix that runs a meterr-operator subcommand of
// bin, and the pprof base URL when -pprof is on (for the current binary only:
// the wrapper is built from the current code).
func (h *harness) binary(bin, sub string) ([]string, string, error) {
	if h.cfg.pprofBin == "" || bin != h.cfg.bin {
		if bin == h.cfg.authBin && sub == "auth-server" {
			return []string{bin}, "", nil
		}
		return []string{bin, sub}, "", nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	return []string{h.cfg.pprofBin, sub, "--pprof-addr", addr}, "http://" + addr + "/debug/pprof", nil
}

// profile saves a profile from a pprof endpoint (in the background when
// asked); it does nothing without -pprof.
func (h *harness) profile(ctx context.Context, base, path, name string) {
	if base == "" {
		return
	}
	if err := os.MkdirAll(h.cfg.profileDir, 0o755); err != nil {
		return
	}
	body, err := httpGet(ctx, base+"/"+path)
	if err != nil {
		h.logf("profile %s: %v", name, err)
		return
	}
	file := filepath.Join(h.cfg.profileDir, name+".pprof")
	if err := os.WriteFile(file, body, 0o644); err == nil {
		h.logf("  profile saved: %s", file)
	}
}

// startAuthServer starts `bin auth-server` with only the flags the base
// revision also has: a flag added since would make the base binary exit.
func (h *harness) startAuthServer(ctx context.Context, name, bin, kubeconfig, ns, cpus string, flags ...string) (*authServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	maddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	argv, pprofURL, err := h.binary(bin, "auth-server")
	if err != nil {
		return nil, err
	}
	p, err := h.procs.startEnv(name, cpus, h.cfg.authEnv, append(append(argv, "--kubeconfig", kubeconfig, "--listen", addr,
		"--metrics-bind-address", maddr, "--records-namespace", ns), flags...)...)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+addr+"/readyz", p, 5*time.Minute); err != nil {
		return nil, err
	}
	a := &authServer{p: p, addr: addr, ready: time.Since(p.started), pprof: pprofURL, metrics: "http://" + maddr + "/metrics"}
	h.profile(ctx, pprofURL, "heap", name+"-heap-ready-nogc")
	h.profile(ctx, pprofURL, "heap?gc=1", name+"-heap-ready")
	return a, nil
}

// pick returns up to n distinct random elements of s.
func pick(s []string, n int) []string {
	if n >= len(s) {
		return append([]string(nil), s...)
	}
	idx := rand.Perm(len(s))[:n]
	out := make([]string, n)
	for i, j := range idx {
		out[i] = s[j]
	}
	return out
}

// Series of load runs, one run per round each, in round order (so that the
// i-th runs of two series were measured side by side and their ratio is one
// round's ratio). "after" is the binary under test (-bin), "before" the base
// revision's (-base-bin); "u-" series run unpinned.
const (
	sBare, sBareT, sBareTH               = "bare", "bare+timeouts", "bare+timeouts+headers"
	sAfter, sAfterUnknown, sAfterMalform = "after", "after-unknown", "after-malformed"
	sBefore                              = "before"
	sUBare, sUAfter, sUBefore            = "u-bare", "u-after", "u-before"
	sUBareTH                             = "u-bare+timeouts+headers"
	// The binary under test with --keepalive-takeover=false: net/http
	// serves every request.
	sAfterNH, sUAfterNH = "after-net/http", "u-after-net/http"
	// The full binary's `auth-server` (-bin) beside the slim binary
	// (-auth-bin), which is "after".
	sAfterFull                    = "after-full-binary"
	sLBare, sLAfterSmall, sLAfter = "L-bare", "L-after-small", "L-after"
	sLBeforeSmall, sLBefore       = "L-before-small", "L-before"
)

// loadTarget is one server measured in every round.
type loadTarget struct {
	series string
	p      *proc
	addr   string
	ks     keySet
	want   string // "2xx" or "non2xx"
	prof   string // pprof base URL
	// pinned runs the load generator on -load-cpus (the server was started
	// on -server-cpus); unpinned runs leave both to the scheduler.
	pinned bool
}

// measure runs c.rounds rounds; each round runs every target once, in order,
// so slow drifts of the shared machine fall on all of them alike.
func (h *harness) measure(ctx context.Context, targets []loadTarget) error {
	c := h.cfg
	for round := range c.rounds {
		for _, tg := range targets {
			var wg sync.WaitGroup
			if tg.prof != "" {
				secs := max(1, int(c.duration/time.Second)-1)
				name := fmt.Sprintf("%s-%s-round%d-cpu", tg.p.name, tg.series, round+1)
				wg.Go(func() { h.profile(ctx, tg.prof, fmt.Sprintf("profile?seconds=%d", secs), name) })
			}
			cpus := ""
			if tg.pinned {
				cpus = c.loadCPUs
			}
			lr, err := h.load(ctx, tg.p, tg.addr, tg.ks, c.duration, cpus)
			wg.Wait()
			if err != nil {
				return fmt.Errorf("%s: %w", tg.series, err)
			}
			h.logf("  round %d %-22s %8.0f req/s  p50 %-8s p99 %-8s cpu/req %-8s non2xx %d errors %d control plane cpu %s", round+1, tg.series,
				lr.RPS, lr.P50, lr.P99, lr.cpuPerRequest(), lr.Non2xx, lr.Errors, time.Duration(lr.OtherTicks)*time.Second/clockTicks)
			switch {
			case tg.want == "2xx" && lr.Non2xx > 0:
				return fmt.Errorf("%s: %d of %d answers were not 2xx: valid keys were refused", tg.series, lr.Non2xx, lr.Requests)
			case tg.want == "non2xx" && lr.Non2xx != lr.Requests:
				return fmt.Errorf("%s: %d of %d answers were 2xx: invalid keys were accepted", tg.series, lr.Requests-lr.Non2xx, lr.Requests)
			}
			h.res.series[tg.series] = append(h.res.series[tg.series], lr)
		}
	}
	return nil
}

func (h *harness) authPhase(ctx context.Context) error {
	c := h.cfg
	r := h.res
	hasBase := c.baseBin != ""
	h.logf("auth server phase: starting a control plane")
	cp, err := h.startControlPlane("auth")
	if err != nil {
		return err
	}
	defer h.stopControlPlane(cp)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const ns, smallNS = "meterr-system", "meterr-small"
	if err := ensureNamespace(ctx, cp.cs, ns); err != nil {
		return err
	}

	t := time.Now()
	keys, err := generateKeys(c.largeKeys)
	if err != nil {
		return err
	}
	unknownKeys, err := generateKeys(c.probeKeys)
	if err != nil {
		return err
	}
	h.logf("generated %d keys in %s", len(keys)+len(unknownKeys), time.Since(t).Round(time.Millisecond))
	small := min(c.smallKeys, c.largeKeys)
	t = time.Now()
	// The small index lives in a namespace of its own, so that its servers
	// keep running beside the large ones and all are measured in the same
	// rounds (the machine's noise drifts over minutes).
	if err := ensureNamespace(ctx, cp.cs, smallNS); err != nil {
		return err
	}
	if err := h.createRecords(ctx, cp.cs, smallNS, keys, 0, small); err != nil {
		return err
	}
	h.logf("created %d records in %s", small, time.Since(t).Round(time.Millisecond))

	// The baseline, and two steps from it towards what the auth server must
	// do, to attribute the gap: its HTTP timeouts, then its answer's headers.
	startBare := func(name, cpus string, flags ...string) (*proc, string, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		p, err := h.procs.start(name, cpus, append([]string{c.bareBin, "-listen", addr}, flags...)...)
		if err != nil {
			return nil, "", err
		}
		return p, addr, waitHTTP(ctx, "http://"+addr+"/", p, 30*time.Second)
	}
	bare, bareAddr, err := startBare("bare", c.serverCPUs)
	if err != nil {
		return err
	}
	bareT, bareTAddr, err := startBare("bare-timeouts", c.serverCPUs, "-timeouts")
	if err != nil {
		return err
	}
	bareTH, bareTHAddr, err := startBare("bare-timeouts-headers", c.serverCPUs, "-timeouts", "-headers")
	if err != nil {
		return err
	}
	auth, err := h.startAuthServer(ctx, "auth-server-small", c.authBinary(), cp.kubeconfig, smallNS, c.serverCPUs)
	if err != nil {
		return err
	}
	// The full binary's auth-server beside the slim one: what the slim
	// binary alone saves.
	var full *authServer
	if c.authBin != "" {
		if full, err = h.startAuthServer(ctx, "auth-server-small-full-binary", c.bin, cp.kubeconfig, smallNS, c.serverCPUs); err != nil {
			return err
		}
	}
	r.after.readySmall = auth.ready
	h.logf("auth server ready with %d records after %s", small, auth.ready.Round(time.Millisecond))
	authNH, err := h.startAuthServer(ctx, "auth-server-small-net-http", c.authBinary(), cp.kubeconfig, smallNS, c.serverCPUs, "--keepalive-takeover=false")
	if err != nil {
		return err
	}
	var base *authServer
	if hasBase {
		if base, err = h.startAuthServer(ctx, "auth-server-base-small", c.baseBin, cp.kubeconfig, smallNS, c.serverCPUs); err != nil {
			return fmt.Errorf("the base revision's auth server: %w", err)
		}
		r.before.readySmall = base.ready
	}
	// The same servers unpinned: GOMAXPROCS is the machine's, and the
	// scheduler places the servers and the load generator.
	var uBare, uBareTH, uAuth, uAuthNH, uBase *proc
	var uBareAddr, uBareTHAddr, uAuthAddr, uAuthNHAddr, uBaseAddr string
	if c.unpinned {
		if uBare, uBareAddr, err = startBare("bare-unpinned", ""); err != nil {
			return err
		}
		// What net/http alone allows unpinned with the auth server's
		// timeouts and the contract's headers: the ceiling of the
		// unpinned throughput target.
		if uBareTH, uBareTHAddr, err = startBare("bare-timeouts-headers-unpinned", "", "-timeouts", "-headers"); err != nil {
			return err
		}
		a, err := h.startAuthServer(ctx, "auth-server-small-unpinned", c.authBinary(), cp.kubeconfig, smallNS, "")
		if err != nil {
			return err
		}
		uAuth, uAuthAddr = a.p, a.addr
		if a, err = h.startAuthServer(ctx, "auth-server-small-net-http-unpinned", c.authBinary(), cp.kubeconfig, smallNS, "", "--keepalive-takeover=false"); err != nil {
			return err
		}
		uAuthNH, uAuthNHAddr = a.p, a.addr
		if hasBase {
			a, err := h.startAuthServer(ctx, "auth-server-base-small-unpinned", c.baseBin, cp.kubeconfig, smallNS, "")
			if err != nil {
				return fmt.Errorf("the base revision's auth server: %w", err)
			}
			uBase, uBaseAddr = a.p, a.addr
		}
	}

	malformedKeys := make([]string, 0, c.probeKeys)
	for _, k := range pick(keys[:small], c.probeKeys) {
		malformedKeys = append(malformedKeys, malform(k))
	}
	sets := map[string][]string{
		"valid-small": pick(keys[:small], c.probeKeys),
		"unknown":     unknownKeys,
		"malformed":   malformedKeys,
	}
	ks := map[string]keySet{}
	for name, tokens := range sets {
		if ks[name], err = h.writeKeySet(name, tokens); err != nil {
			return err
		}
	}
	for _, addr := range []string{auth.addr, baseAddr(full), authNH.addr, uAuthAddr, uAuthNHAddr, baseAddr(base), uBaseAddr} {
		if addr == "" {
			continue
		}
		if err := h.sanity(ctx, addr, keys[0], unknownKeys[0], malformedKeys[0]); err != nil {
			return err
		}
	}

	order := "bare, bare + timeouts, bare + timeouts + headers, after (valid, unknown, malformed), after with --keepalive-takeover=false"
	vs := ks["valid-small"]
	targets := []loadTarget{
		{sBare, bare, bareAddr, vs, "2xx", "", true},
		{sBareT, bareT, bareTAddr, vs, "2xx", "", true},
		{sBareTH, bareTH, bareTHAddr, vs, "2xx", "", true},
		{sAfter, auth.p, auth.addr, vs, "2xx", auth.pprof, true},
		{sAfterUnknown, auth.p, auth.addr, ks["unknown"], "non2xx", auth.pprof, true},
		{sAfterMalform, auth.p, auth.addr, ks["malformed"], "non2xx", auth.pprof, true},
		{sAfterNH, authNH.p, authNH.addr, vs, "2xx", "", true},
	}
	if full != nil {
		targets = append(targets, loadTarget{sAfterFull, full.p, full.addr, vs, "2xx", "", true})
		order += ", after's full binary (`meterr-operator auth-server`)"
	}
	if hasBase {
		targets = append(targets, loadTarget{sBefore, base.p, base.addr, vs, "2xx", "", true})
		order += ", before"
	}
	if c.unpinned {
		targets = append(targets, loadTarget{sUBare, uBare, uBareAddr, vs, "2xx", "", false},
			loadTarget{sUBareTH, uBareTH, uBareTHAddr, vs, "2xx", "", false},
			loadTarget{sUAfter, uAuth, uAuthAddr, vs, "2xx", "", false},
			loadTarget{sUAfterNH, uAuthNH, uAuthNHAddr, vs, "2xx", "", false})
		order += "; unpinned: bare, bare + timeouts + headers, after, after with --keepalive-takeover=false"
		if hasBase {
			targets = append(targets, loadTarget{sUBefore, uBase, uBaseAddr, vs, "2xx", "", false})
			order += ", before"
		}
	}
	r.orderSmall = order
	h.logf("load at %d keys: %d rounds of %s, %d connections, %s; each round: %s", small, c.rounds, c.duration, c.conns, r.tool, order)
	if err := h.measure(ctx, targets); err != nil {
		return err
	}
	// Memory after the load runs, each split into anonymous and
	// file-backed pages, beside the bare handler's.
	if r.after.memSmall, err = memOf(auth.p); err != nil {
		return err
	}
	r.after.rssSmall = r.after.memSmall.rss
	r.after.heapSmall = auth.heapInuse(ctx)
	if r.bareSmall, err = memOf(bare); err != nil {
		return err
	}
	if full != nil {
		if r.fullSmall, err = memOf(full.p); err != nil {
			return err
		}
		full.p.stop(5 * time.Second)
	}
	if hasBase {
		if r.before.memSmall, err = memOf(base.p); err != nil {
			return err
		}
		r.before.rssSmall = r.before.memSmall.rss
		r.before.heapSmall = base.heapInuse(ctx)
	}
	for _, p := range []*proc{bareT, bareTH, authNH.p, uBare, uAuth, uAuthNH, uBase} {
		if p != nil {
			p.stop(5 * time.Second)
		}
	}

	t = time.Now()
	h.logf("creating %d records", c.largeKeys)
	if err := h.createRecords(ctx, cp.cs, ns, keys, 0, c.largeKeys); err != nil {
		return err
	}
	r.createLarge = time.Since(t)
	r.createLargeN = c.largeKeys
	h.logf("created them in %s", r.createLarge.Round(time.Millisecond))
	// One list of them first: the first large list after the creates is
	// slower (the API server's caches), and whichever auth server started
	// first paid for it. It is also the start-up's baseline.
	t = time.Now()
	n, err := listRecords(ctx, cp.cs, ns)
	if err != nil {
		return err
	}
	r.listLarge = time.Since(t)
	h.logf("listed %d records in %s", n, r.listLarge.Round(time.Millisecond))

	authSmall, baseSmall := auth, base
	auth, err = h.startAuthServer(ctx, "auth-server-large", c.authBinary(), cp.kubeconfig, ns, c.serverCPUs)
	if err != nil {
		return err
	}
	h.logf("auth server ready with %d records after %s", c.largeKeys, auth.ready.Round(time.Millisecond))
	if err := h.largeReady(auth, &r.after); err != nil {
		return err
	}
	if hasBase {
		if base, err = h.startAuthServer(ctx, "auth-server-base-large", c.baseBin, cp.kubeconfig, ns, c.serverCPUs); err != nil {
			return fmt.Errorf("the base revision's auth server: %w", err)
		}
		h.logf("base auth server ready with %d records after %s", c.largeKeys, base.ready.Round(time.Millisecond))
		if err := h.largeReady(base, &r.before); err != nil {
			return err
		}
	}
	if ks["valid-large"], err = h.writeKeySet("valid-large", pick(keys, c.probeKeys)); err != nil {
		return err
	}
	for _, addr := range []string{auth.addr, baseAddr(base)} {
		if addr == "" {
			continue
		}
		if err := h.sanity(ctx, addr, keys[len(keys)-1], unknownKeys[0], malformedKeys[0]); err != nil {
			return err
		}
	}
	vl := ks["valid-large"]
	targets = []loadTarget{
		{sLBare, bare, bareAddr, vl, "2xx", "", true},
		{sLAfterSmall, authSmall.p, authSmall.addr, vs, "2xx", "", true},
		{sLAfter, auth.p, auth.addr, vl, "2xx", auth.pprof, true},
	}
	order = "bare, after with " + num(small) + " keys, after with " + num(c.largeKeys)
	if hasBase {
		targets = append(targets, loadTarget{sLBeforeSmall, baseSmall.p, baseSmall.addr, vs, "2xx", "", true},
			loadTarget{sLBefore, base.p, base.addr, vl, "2xx", "", true})
		order += ", before with " + num(small) + ", before with " + num(c.largeKeys)
	}
	r.orderLarge = order
	h.logf("load at %d keys, beside the servers with %d keys; each round: %s", c.largeKeys, small, order)
	if err := h.measure(ctx, targets); err != nil {
		return err
	}
	authSmall.p.stop(20 * time.Second)
	if baseSmall != nil {
		baseSmall.p.stop(20 * time.Second)
	}
	h.largeLoaded(ctx, auth, &r.after)
	if r.bareLarge, err = memOf(bare); err != nil {
		return err
	}
	h.profile(ctx, auth.pprof, "heap?gc=1", auth.p.name+"-heap-loaded")
	if hasBase {
		h.largeLoaded(ctx, base, &r.before)
		base.p.stop(20 * time.Second)
	}

	h.logf("propagation of record changes: %d samples each", c.propSamples)
	if r.prop, err = h.propagation(ctx, cp.cs, ns, auth.addr, c.propSamples); err != nil {
		return err
	}
	for _, k := range []string{"add", "disable", "delete"} {
		h.logf("  %-8s p50 %-10s p99 %-10s (harness watch p50 %s p99 %s)", k, r.prop[k].pct(0.5), r.prop[k].pct(0.99),
			r.prop[k+"-watch"].pct(0.5), r.prop[k+"-watch"].pct(0.99))
	}
	auth.p.stop(20 * time.Second)
	bare.stop(5 * time.Second)
	return nil
}

func baseAddr(a *authServer) string {
	if a == nil {
		return ""
	}
	return a.addr
}

// authBinary is the after side's auth server binary: the slim one when
// given.
func (c config) authBinary() string {
	if c.authBin != "" {
		return c.authBin
	}
	return c.bin
}

// largeReady records a large-index server's start-up and memory at ready.
func (h *harness) largeReady(a *authServer, st *serverStats) error {
	st.readyLarge = a.ready
	rss, err := rssBytes(a.p.pid())
	st.rssLargeReady = rss
	return err
}

// largeLoaded records a large-index server's memory after its load runs.
func (h *harness) largeLoaded(ctx context.Context, a *authServer, st *serverStats) {
	rss, err := rssBytes(a.p.pid())
	if err != nil {
		h.logf("%s: %v", a.p.name, err)
	}
	st.rssLargeLoaded = rss
	st.rssLarge = max(st.rssLargeReady, rss)
	if s, err := procStatus(a.p.pid()); err == nil {
		st.rssLargePeak, st.rssLargeAnon, st.rssLargeFile = s["VmHWM"], s["RssAnon"], s["RssFile"]
	}
	st.heapLarge = a.heapInuse(ctx)
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
