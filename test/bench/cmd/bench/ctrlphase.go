package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/revocation"
	"github.com/meterr/meterr-operator/test/testenv"
)

const dataKeyAPIKey = "api-key" // authv1alpha1.DataKeyAPIKey

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := authv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// scrapeSum fetches a Prometheus text endpoint and sums the samples of
// metric whose labels contain every one of match, grouped by the values of
// groupBy (joined with " ").
func scrapeSum(body []byte, metric string, match []string, groupBy []string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, metric+"{") {
			continue
		}
		end := strings.LastIndexByte(l, '}')
		if end < 0 {
			continue
		}
		labels, value := l[len(metric)+1:end], strings.TrimSpace(l[end+1:])
		ok := true
		for _, m := range match {
			if !strings.Contains(labels, m) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			continue
		}
		var g []string
		for _, name := range groupBy {
			g = append(g, labelValue(labels, name))
		}
		out[strings.Join(g, " ")] += v
	}
	return out
}

var reLabel = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

func labelValue(labels, name string) string {
	for _, m := range reLabel.FindAllStringSubmatch(labels, -1) {
		if m[1] == name {
			return m[2]
		}
	}
	return ""
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

// manager is the running manager binary.
type manager struct {
	p          *proc
	metricsURL string
	pprof      string
}

// reconciles returns controller_runtime_reconcile_total for the
// meterrapikey controller, all results, and the errors among them.
func (m *manager) reconciles(ctx context.Context) (total, errs float64, err error) {
	body, err := httpGet(ctx, m.metricsURL)
	if err != nil {
		return 0, 0, err
	}
	for res, v := range scrapeSum(body, "controller_runtime_reconcile_total", []string{`controller="meterrapikey"`}, []string{"result"}) {
		total += v
		if res == "error" {
			errs += v
		}
	}
	return total, errs, nil
}

// settle waits until the reconcile count has not moved for quiet, and
// returns it.
func (m *manager) settle(ctx context.Context, quiet, limit time.Duration) (float64, error) {
	last, _, err := m.reconciles(ctx)
	if err != nil {
		return 0, err
	}
	since := time.Now()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		n, _, err := m.reconciles(ctx)
		if err != nil {
			return 0, err
		}
		if n != last {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			break
		}
	}
	return last, nil
}

// apiRequests returns apiserver_request_total by "VERB resource[/sub]".
func apiRequests(ctx context.Context, rc rest.Interface) (map[string]float64, error) {
	body, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	raw := scrapeSum(body, "apiserver_request_total", nil, []string{"verb", "resource", "subresource"})
	out := map[string]float64{}
	for k, v := range raw {
		f := strings.Fields(k + " ")
		if len(f) < 2 {
			continue
		}
		name := f[0] + " " + f[1]
		if len(f) > 2 && f[2] != "" {
			name += "/" + f[2]
		}
		out[name] += v
	}
	return out, nil
}

// apiServerCPU is the API server process's CPU time so far, in seconds
// (process_cpu_seconds_total): what a wave costs it, per key, holds across
// machines of a kind better than how long the wave took.
func apiServerCPU(ctx context.Context, rc rest.Interface) (float64, error) {
	body, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(l, "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("the API server's /metrics has no process_cpu_seconds_total")
}

// tracker follows every MeterrAPIKey of a namespace through an informer.
type tracker struct {
	mu          sync.Mutex
	state       map[string]uint8 // bit 0: ready, bit 1: rotated
	ready       int
	rotated     int
	requestedAt time.Time
}

func (t *tracker) update(obj any) {
	m, ok := obj.(*authv1alpha1.MeterrAPIKey)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ready := meta.IsStatusConditionTrue(m.Status.Conditions, "Ready") && m.Status.CurrentKey != nil &&
		m.Status.ObservedGeneration == m.Generation
	rotated := ready && !t.requestedAt.IsZero() && m.Status.CurrentKey.IssuedAt.Unix() >= t.requestedAt.Unix() &&
		len(m.Status.PreviousKeys) > 0
	var s uint8
	if ready {
		s |= 1
	}
	if rotated {
		s |= 2
	}
	old := t.state[m.Name]
	t.state[m.Name] = s
	t.ready += int(s&1) - int(old&1)
	t.rotated += int(s>>1) - int(old>>1)
}

func (t *tracker) counts() (ready, rotated int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ready, t.rotated
}

// waitCount waits until count() reaches n; it returns the time from start,
// the last count and whether it got there.
func (h *harness) waitCount(ctx context.Context, what string, n int, start time.Time, count func() int) (time.Duration, int, bool) {
	lastLog := time.Now()
	c := 0
	err := testenv.Eventually(ctx, h.cfg.ctrlTimeout-time.Since(start), 50*time.Millisecond, func(context.Context) (bool, error) {
		if c = count(); c >= n {
			return true, nil
		}
		if time.Since(lastLog) >= 10*time.Second {
			h.logf("  %d/%d %s after %s", c, n, what, time.Since(start).Round(time.Second))
			lastLog = time.Now()
		}
		return false, nil
	})
	return time.Since(start), c, err == nil
}

func (h *harness) controllerPhase(ctx context.Context) error {
	c := h.cfg
	r := h.res
	// The rotation wave follows the creation wave by a second: no minimum
	// interval between rotations, or the wave would only measure the wait.
	r.managerFlags = fmt.Sprintf("--kube-api-qps %d --kube-api-burst %d --max-concurrent-reconciles %d --min-rotation-interval 0s",
		c.managerQPS, c.managerBurst, c.managerConcurrency)
	if err := h.fleetPhase(ctx, "controller", c.bin, &r.fleet, true); err != nil {
		return err
	}
	if c.fleetBase && c.baseBin != "" {
		if err := h.fleetPhase(ctx, "controller-base", c.baseBin, &r.fleetBase, false); err != nil {
			return fmt.Errorf("the base revision's manager: %w", err)
		}
	}
	return nil
}

// fleetPhase runs, on a control plane of its own, the API server write-rate
// baseline, then the manager bin; with apply, also MeterrAPIKey created ->
// key accepted through an auth server; then the fleet.
func (h *harness) fleetPhase(ctx context.Context, name, bin string, st *fleetStats, apply bool) error {
	c := h.cfg
	r := h.res
	h.logf("controller phase (%s): starting a control plane", bin)
	cp, err := h.startControlPlane(name)
	if err != nil {
		return err
	}
	defer h.stopControlPlane(cp)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := h.procs.run(ctx, "kubectl", "", c.kubectl, "--kubeconfig", cp.kubeconfig, "apply", "--server-side", "-f", c.crdDir); err != nil {
		return err
	}
	if _, err := h.procs.run(ctx, "kubectl", "", c.kubectl, "--kubeconfig", cp.kubeconfig, "wait", "--for=condition=Established",
		"crd/meterrapikeys.auth.meterr.ai", "--timeout=60s"); err != nil {
		return err
	}
	const recordsNS, applyNS, scaleNS, writeNS = "meterr-system", "bench-apply", "bench-scale", "bench-write-rate"
	const replayNS, replayRecordsNS = "bench-replay", "bench-replay-records"
	for _, ns := range []string{recordsNS, applyNS, scaleNS, writeNS, replayNS, replayRecordsNS} {
		if err := ensureNamespace(ctx, cp.cs, ns); err != nil {
			return err
		}
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	jsonCfg := rest.CopyConfig(cp.cfg)
	jsonCfg.ContentType = ""
	cl, err := client.New(jsonCfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := h.writeRate(ctx, cl, cp.cs.CoreV1().RESTClient(), writeNS, st); err != nil {
		return fmt.Errorf("API server write rate: %w", err)
	}
	// The floor is of this revision's writes: once, on the side under test.
	if c.fleetFloor && st == &r.fleet {
		if err := h.replayWrites(ctx, jsonCfg, cl, replayNS, replayRecordsNS, st); err != nil {
			return fmt.Errorf("the fleet's floor: %w", err)
		}
	}

	maddr, err := freeAddr()
	if err != nil {
		return err
	}
	paddr, err := freeAddr()
	if err != nil {
		return err
	}
	argv, pprofURL, err := h.binary(bin, "manager")
	if err != nil {
		return err
	}
	// Only flags the base revision also has.
	mp, err := h.procs.start(name+"-manager", "", append(append(argv, "--kubeconfig", cp.kubeconfig,
		// Plain HTTP metrics: the harness scrapes them without a token.
		"--metrics-bind-address", maddr, "--metrics-secure=false", "--health-probe-bind-address", paddr, "--records-namespace", recordsNS),
		strings.Fields(r.managerFlags)...)...)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+paddr+"/readyz", mp, 2*time.Minute); err != nil {
		return err
	}
	// Ready is no promise that the metrics server listens yet: the manager
	// starts the two apart.
	if err := waitHTTP(ctx, "http://"+maddr+"/metrics", mp, 2*time.Minute); err != nil {
		return err
	}
	mgr := &manager{p: mp, metricsURL: "http://" + maddr + "/metrics", pprof: pprofURL}
	if _, _, err := mgr.reconciles(ctx); err != nil {
		return fmt.Errorf("reading the manager's metrics: %w", err)
	}

	if apply {
		auth, err := h.startAuthServer(ctx, "auth-server-controller", bin, cp.kubeconfig, recordsNS, "")
		if err != nil {
			return err
		}
		h.logf("manager and auth server ready; MeterrAPIKey create -> key accepted: %d samples", c.applySamples)
		if err := h.applyPropagation(ctx, cp, cl, applyNS, auth.addr); err != nil {
			return err
		}
		h.logf("  create -> accepted p50 %s p99 %s (workload Secret seen p50 %s p99 %s)",
			r.apply.pct(0.5), r.apply.pct(0.99), r.applySecret.pct(0.5), r.applySecret.pct(0.99))
		h.logf("key reported leaked -> refused: %d samples", c.applySamples)
		if err := h.revokePropagation(ctx, cp, cl, applyNS, auth.addr); err != nil {
			return err
		}
		h.logf("  reported -> refused p50 %s p99 %s", r.revoke.pct(0.5), r.revoke.pct(0.99))
		// The fleet test measures the controller and the API server alone.
		auth.p.stop(20 * time.Second)
	}
	return h.fleet(ctx, cp, cl, mgr, scaleNS, st)
}

// fleetKey is the harness's MeterrAPIKey number i in ns, one shape for the
// write rate, the floor and the fleet, so that each writes the same objects.
func fleetKey(ns string, i int) *authv1alpha1.MeterrAPIKey {
	return &authv1alpha1.MeterrAPIKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("key-%05d", i)},
		Spec:       authv1alpha1.MeterrAPIKeySpec{Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead}},
	}
}

// writeRate is the fleet's baseline, measured on the same control plane
// before the manager starts: the harness alone creates as many MeterrAPIKeys
// as the fleet has, with the same concurrency, then merge-patches each once as
// the rotation wave does, then deletes them. A fleet time over this time is a
// figure of the manager, not of how fast this machine's API server writes.
func (h *harness) writeRate(ctx context.Context, cl client.Client, rc rest.Interface, ns string, st *fleetStats) error {
	c := h.cfg
	n := c.ctrlKeys
	h.logf("API server write rate: %d MeterrAPIKeys created, then patched, by the harness alone", n)
	// The client's first request of a kind discovers its REST mapping; not
	// part of the rate.
	if err := cl.List(ctx, &authv1alpha1.MeterrAPIKeyList{}, client.InNamespace(ns), client.Limit(1)); err != nil {
		return err
	}
	cpu0, err := apiServerCPU(ctx, rc)
	if err != nil {
		return err
	}
	split0 := h.cpuNow(0)
	start := time.Now()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		mak := fleetKey(ns, i)
		return createRetry(ctx, func() error { return cl.Create(ctx, mak) })
	}); err != nil {
		return err
	}
	st.writeCreate = time.Since(start)
	cpu1, err := apiServerCPU(ctx, rc)
	if err != nil {
		return err
	}
	st.writeCreateCPU = (cpu1 - cpu0) / float64(n)
	split1 := h.cpuNow(0)
	st.writeCreateSplit = split1.sub(split0).perKey(n)
	patch := []byte(fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, time.Now().UTC().Format(time.RFC3339)))
	start = time.Now()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		mak := fleetKey(ns, i)
		return createRetry(ctx, func() error { return cl.Patch(ctx, mak, client.RawPatch(types.MergePatchType, patch)) })
	}); err != nil {
		return err
	}
	st.writePatch = time.Since(start)
	cpu2, err := apiServerCPU(ctx, rc)
	if err != nil {
		return err
	}
	st.writePatchCPU = (cpu2 - cpu1) / float64(n)
	st.writePatchSplit = h.cpuNow(0).sub(split1).perKey(n)
	h.logf("  created in %s, patched in %s", st.writeCreate.Round(time.Millisecond), st.writePatch.Round(time.Millisecond))
	// No manager has seen them, so no finalizer holds them.
	return cl.DeleteAllOf(ctx, &authv1alpha1.MeterrAPIKey{}, client.InNamespace(ns))
}

// applyPropagation measures MeterrAPIKey created -> its key accepted.
func (h *harness) applyPropagation(ctx context.Context, cp *controlPlane, cl client.Client, ns, authAddr string) error {
	r := h.res
	type seen struct {
		at  time.Time
		key string
	}
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	got := map[string]seen{}
	list, err := cp.cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return err
	}
	wi, err := cp.cs.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer wi.Stop()
	go func() {
		for ev := range wi.ResultChan() {
			now := time.Now()
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) || len(s.Data[dataKeyAPIKey]) == 0 {
				continue
			}
			mu.Lock()
			if _, dup := got[s.Name]; !dup {
				got[s.Name] = seen{at: now, key: string(s.Data[dataKeyAPIKey])}
			}
			cond.Broadcast()
			mu.Unlock()
		}
	}()
	wake := context.AfterFunc(ctx, func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
	defer wake()
	waitSecret := func(name string, timeout time.Duration) (seen, bool) {
		t := time.AfterFunc(timeout, func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
		defer t.Stop()
		deadline := time.Now().Add(timeout)
		mu.Lock()
		defer mu.Unlock()
		for {
			if s, ok := got[name]; ok {
				return s, true
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return seen{}, false
			}
			cond.Wait()
		}
	}
	v := newVerifier(authAddr)
	const timeout = 30 * time.Second
	for i := range h.cfg.applySamples {
		mak := &authv1alpha1.MeterrAPIKey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("apply-%04d", i)},
			Spec: authv1alpha1.MeterrAPIKeySpec{
				Permissions: []authv1alpha1.Permission{authv1alpha1.PermissionRead},
				RateLimit:   authv1alpha1.RateLimit{Tier: authv1alpha1.TierPro},
			},
		}
		if err := cl.Create(ctx, mak); err != nil {
			return err
		}
		start := time.Now()
		s, ok := waitSecret(mak.Name, timeout)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !ok {
			return fmt.Errorf("the workload Secret of MeterrAPIKey %s/%s did not appear within %s", ns, mak.Name, timeout)
		}
		d, err := v.pollUntil(ctx, s.key, http.StatusOK, start, h.cfg.pollInterval, timeout)
		if err != nil {
			return fmt.Errorf("the key of MeterrAPIKey %s/%s was not accepted: %w", ns, mak.Name, err)
		}
		r.apply.add(d)
		r.applySecret.add(s.at.Sub(start))
	}
	return nil
}

// revokePropagation measures a revocation request filed -> the key refused
// (401), on the keys applyPropagation issued.
func (h *harness) revokePropagation(ctx context.Context, cp *controlPlane, cl client.Client, ns, authAddr string) error {
	v := newVerifier(authAddr)
	const timeout = 30 * time.Second
	for i := range h.cfg.applySamples {
		name := fmt.Sprintf("apply-%04d", i)
		s, err := cp.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		key := string(s.Data[dataKeyAPIKey])
		start := time.Now()
		if err := revocation.Submit(ctx, cl, types.NamespacedName{Namespace: ns, Name: name}, apikey.HashOf(key), "bench", "bench"); err != nil {
			return err
		}
		d, err := v.pollUntil(ctx, key, http.StatusUnauthorized, start, h.cfg.pollInterval, timeout)
		if err != nil {
			return fmt.Errorf("the revoked key of MeterrAPIKey %s/%s was still accepted: %w", ns, name, err)
		}
		h.res.revoke.add(d)
	}
	return nil
}

// fleet creates many MeterrAPIKeys at once, waits for all Ready, then asks
// for a rotation of all and waits for all rotated.
func (h *harness) fleet(ctx context.Context, cp *controlPlane, cl client.Client, mgr *manager, ns string, r *fleetStats) error {
	c := h.cfg
	n := c.ctrlKeys
	r.ctrlKeys = n

	scheme, err := newScheme()
	if err != nil {
		return err
	}
	jsonCfg := rest.CopyConfig(cp.cfg)
	jsonCfg.ContentType = ""
	informers, err := cache.New(jsonCfg, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return err
	}
	inf, err := informers.GetInformer(ctx, &authv1alpha1.MeterrAPIKey{})
	if err != nil {
		return err
	}
	tr := &tracker{state: map[string]uint8{}}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    tr.update,
		UpdateFunc: func(_, o any) { tr.update(o) },
	}); err != nil {
		return err
	}
	cacheCtx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = informers.Start(cacheCtx) }()
	if !informers.WaitForCacheSync(ctx) {
		return fmt.Errorf("the harness's MeterrAPIKey informer did not sync")
	}

	rec0, err0, err := mgr.reconciles(ctx)
	if err != nil {
		return err
	}
	api0, err := apiRequests(ctx, cp.cs.CoreV1().RESTClient())
	if err != nil {
		return err
	}
	cpu0, err := apiServerCPU(ctx, cp.cs.CoreV1().RESTClient())
	if err != nil {
		return err
	}

	h.logf("fleet: creating %d MeterrAPIKeys (%d concurrent creates); manager %s", n, c.createWorkers, h.res.managerFlags)
	var profiling sync.WaitGroup
	defer profiling.Wait()
	profSecs := "profile?seconds=" + strconv.Itoa(min(60, max(5, n/200)))
	profiling.Go(func() { h.profile(ctx, mgr.pprof, profSecs, "manager-create-cpu") })
	split0 := h.cpuNow(mgr.p.pid())
	start := time.Now()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		mak := fleetKey(ns, i)
		return createRetry(ctx, func() error { return cl.Create(ctx, mak) })
	}); err != nil {
		return err
	}
	r.createSubmit = time.Since(start)
	h.logf("  created in %s; waiting for all Ready", r.createSubmit.Round(time.Millisecond))
	var ok bool
	r.readyAll, r.readyDone, ok = h.waitCount(ctx, "Ready", n, start, func() int { a, _ := tr.counts(); return a })
	r.fleetCreateCPU = h.cpuNow(mgr.p.pid()).sub(split0).perKey(n)
	if !ok {
		if c.smoke {
			return fmt.Errorf("only %d of %d MeterrAPIKeys became Ready within %s; the manager's log ends with:\n%s",
				r.readyDone, n, c.ctrlTimeout, mgr.p.logTail())
		}
		r.readyTimedOut = true
		h.logf("  only %d/%d Ready within %s; skipping the rotation wave", r.readyDone, n, c.ctrlTimeout)
		return nil
	}
	h.logf("  all %d Ready after %s", n, r.readyAll.Round(time.Millisecond))
	rec1, err := mgr.settle(ctx, 3*time.Second, time.Minute)
	if err != nil {
		return err
	}
	_, err1, _ := mgr.reconciles(ctx)
	api1, err := apiRequests(ctx, cp.cs.CoreV1().RESTClient())
	if err != nil {
		return err
	}
	r.reconcilesCreate = (rec1 - rec0) / float64(n)
	r.reconcileErrorsCreate = err1 - err0
	r.apiCreate = perKey(api0, api1, n)
	cpu1, err := apiServerCPU(ctx, cp.cs.CoreV1().RESTClient())
	if err != nil {
		return err
	}
	r.createCPU = (cpu1 - cpu0) / float64(n)
	time.Sleep(2 * time.Second)
	idle, _, err := mgr.reconciles(ctx)
	if err != nil {
		return err
	}
	r.idleReconciles = idle - rec1

	// Rotation wave: requestedAt is compared in whole seconds with the
	// current key's issue time, so it must be at least a second later.
	time.Sleep(1100 * time.Millisecond)
	ra := time.Now().Truncate(time.Second)
	tr.mu.Lock()
	tr.requestedAt = ra
	tr.mu.Unlock()
	patch := []byte(fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, ra.UTC().Format(time.RFC3339)))
	h.logf("fleet: rotation wave, requestedAt %s on all %d", ra.UTC().Format(time.RFC3339), n)
	profiling.Wait()
	profiling.Go(func() { h.profile(ctx, mgr.pprof, profSecs, "manager-rotate-cpu") })
	split1 := h.cpuNow(mgr.p.pid())
	start = time.Now()
	if err := parallel(ctx, n, c.createWorkers, func(i int) error {
		mak := fleetKey(ns, i)
		return createRetry(ctx, func() error { return cl.Patch(ctx, mak, client.RawPatch(types.MergePatchType, patch)) })
	}); err != nil {
		return err
	}
	r.rotateSubmit = time.Since(start)
	h.logf("  patched in %s; waiting for all rotated", r.rotateSubmit.Round(time.Millisecond))
	r.rotateAll, r.rotatedDone, ok = h.waitCount(ctx, "rotated", n, start, func() int { _, b := tr.counts(); return b })
	if !ok {
		if c.smoke {
			return fmt.Errorf("only %d of %d MeterrAPIKeys rotated within %s; the manager's log ends with:\n%s",
				r.rotatedDone, n, c.ctrlTimeout, mgr.p.logTail())
		}
		r.rotateTimedOut = true
		h.logf("  only %d/%d rotated within %s", r.rotatedDone, n, c.ctrlTimeout)
	} else {
		r.fleetRotateCPU = h.cpuNow(mgr.p.pid()).sub(split1).perKey(n)
		h.logf("  all %d rotated after %s", n, r.rotateAll.Round(time.Millisecond))
	}
	rec2, err := mgr.settle(ctx, 3*time.Second, time.Minute)
	if err != nil {
		return err
	}
	_, err2, _ := mgr.reconciles(ctx)
	api2, err := apiRequests(ctx, cp.cs.CoreV1().RESTClient())
	if err != nil {
		return err
	}
	r.reconcilesRotate = (rec2 - rec1) / float64(n)
	r.reconcileErrorsRotate = err2 - err1
	r.apiRotate = perKey(api1, api2, n)
	cpu2, err := apiServerCPU(ctx, cp.cs.CoreV1().RESTClient())
	if err != nil {
		return err
	}
	r.rotateCPU = (cpu2 - cpu1) / float64(n)
	time.Sleep(2 * time.Second)
	idle2, _, err := mgr.reconciles(ctx)
	if err != nil {
		return err
	}
	r.idleReconciles += idle2 - rec2
	rss, _ := rssBytes(mgr.p.pid())
	r.managerRSS = rss
	mgr.p.stop(20 * time.Second)
	return nil
}

func perKey(before, after map[string]float64, n int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d / float64(n)
		}
	}
	return out
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, f func(int) error) error {
	var next atomic.Int64
	var first firstError
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil || first.get() != nil {
					return
				}
				if err := f(i); err != nil {
					first.set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.get(); err != nil {
		return err
	}
	return ctx.Err()
}

// firstError keeps the first error reported from several goroutines.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
