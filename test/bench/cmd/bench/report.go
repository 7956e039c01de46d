package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

type results struct {
	cfg       config
	started   time.Time
	finished  time.Time
	loadStart string
	loadEnd   string
	tool      string

	goBenchRaw string
	goBench    map[string]goBenchLine

	// series are the load runs by series name (s* constants), one per round.
	series                 map[string]runs
	orderSmall, orderLarge string
	// after is the binary under test, before the base revision's.
	after, before serverStats
	// The bare handler's memory after the small and the large rounds, and
	// the full binary's auth-server (-bin, when -auth-bin is the after side)
	// after the small rounds.
	bareSmall, bareLarge, fullSmall mem
	createLarge                     time.Duration
	// listLarge is the harness's own list of the large index's records,
	// just before the auth servers start.
	listLarge    time.Duration
	createLargeN int
	prop         map[string]*samples

	apply, applySecret *samples
	// revoke: revocation request filed -> the key refused (invalid_api_key).
	revoke *samples

	managerFlags     string
	fleet, fleetBase fleetStats
}

// serverStats are one auth server binary's start-up and memory figures.
type serverStats struct {
	readySmall, readyLarge                   time.Duration
	rssSmall, rssLarge                       int64
	rssLargeReady, rssLargeLoaded            int64
	rssLargePeak, rssLargeAnon, rssLargeFile int64
	heapSmall, heapLarge                     int64
	// memSmall is the small-index server's memory after its load runs.
	memSmall mem
}

// fleetStats are one manager binary's fleet figures, with the API server
// write-rate baseline measured on the same control plane.
type fleetStats struct {
	writeCreate, writePatch                      time.Duration
	ctrlKeys                                     int
	createSubmit, readyAll                       time.Duration
	readyDone                                    int
	readyTimedOut                                bool
	rotateSubmit, rotateAll                      time.Duration
	rotatedDone                                  int
	rotateTimedOut                               bool
	reconcilesCreate, reconcilesRotate           float64
	reconcileErrorsCreate, reconcileErrorsRotate float64
	idleReconciles                               float64
	apiCreate, apiRotate                         map[string]float64
	managerRSS                                   int64
	// API server CPU seconds per key: the harness's own create and patch
	// (the baseline), and the fleet's creation and rotation waves (the
	// manager's requests and the harness's together).
	writeCreateCPU, writePatchCPU, createCPU, rotateCPU float64
	// The floor: the manager's writes replayed by the harness alone, and
	// each process's CPU per key of the replay and of the fleet's waves.
	replayCreate, replayRotate        time.Duration
	replayCreateCPU, replayRotateCPU  cpuSplit
	fleetCreateCPU, fleetRotateCPU    cpuSplit
	writeCreateSplit, writePatchSplit cpuSplit
}

func newResults(c config) *results {
	r := &results{cfg: c, started: time.Now(), apply: &samples{}, applySecret: &samples{}, revoke: &samples{}, series: map[string]runs{}}
	if c.wrk != "" {
		v := "wrk"
		if out, _ := exec.Command(c.wrk, "-v").CombinedOutput(); len(out) > 0 {
			v = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
			if i := strings.Index(v, " Copyright"); i > 0 {
				v = v[:i]
			}
		}
		r.tool = v
	} else {
		r.tool = "the Go load generator test/bench/cmd/load (wrk was not available)"
	}
	return r
}

type goBenchLine struct {
	nsOp, bOp, allocsOp, cpuNsOp float64
}

// readGoBench reads `go test -bench -benchmem` output.
func (r *results) readGoBench(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r.goBenchRaw = string(data)
	r.goBench = map[string]goBenchLine{}
	sc := bufio.NewScanner(strings.NewReader(r.goBenchRaw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		var l goBenchLine
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				l.nsOp = v
			case "B/op":
				l.bOp = v
			case "allocs/op":
				l.allocsOp = v
			case "cpu-ns/op":
				l.cpuNsOp = v
			}
		}
		r.goBench[name] = l
	}
	return nil
}

// row is one line of the table.
type row struct {
	figure, value, baseline, ratio, target, met string
}

func ratio(a, b float64) (string, float64) {
	if b == 0 {
		return "—", 0
	}
	q := a / b
	return fmt.Sprintf("%.2f", q), q
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func num(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func dur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d >= 100*time.Microsecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// spread is a figure's minimum, median and maximum over the rounds.
type spread struct {
	min, med, max float64
	n             int
}

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{s[0], med, s[len(s)-1], len(s)}
}

// show writes "median (min–max)", or the one value of a single round.
func (s spread) show(f func(float64) string) string {
	switch s.n {
	case 0:
		return "—"
	case 1:
		return f(s.med)
	}
	med, lo, hi := f(s.med), f(s.min), f(s.max)
	// "29.7 µs (28.5–30.3)": the unit once, when all three share it.
	if i := strings.LastIndexByte(med, ' '); i > 0 {
		unit := med[i:]
		if strings.HasSuffix(lo, unit) && strings.HasSuffix(hi, unit) {
			return fmt.Sprintf("%s (%s–%s)", med, strings.TrimSuffix(lo, unit), strings.TrimSuffix(hi, unit))
		}
	}
	return fmt.Sprintf("%s (%s–%s)", med, lo, hi)
}

func showDur(v float64) string   { return dur(time.Duration(v)) }
func showRPS(v float64) string   { return num(int(v + 0.5)) }
func showRatio(v float64) string { return fmt.Sprintf("%.2f", v) }

func cpuReq(l loadResult) float64 { return float64(l.cpuPerRequest()) }
func rpsOf(l loadResult) float64  { return l.RPS }
func p50Of(l loadResult) float64  { return float64(l.P50) }
func p99Of(l loadResult) float64  { return float64(l.P99) }

// each is f of every run of a series.
func (r *results) each(series string, f func(loadResult) float64) spread {
	var v []float64
	for _, l := range r.series[series] {
		v = append(v, f(l))
	}
	return spreadOf(v)
}

// perRound is the spread of f(a)/f(b) over the rounds, each ratio taken
// between the runs of one round: the machine's drift between rounds falls
// on both sides of each ratio.
func (r *results) perRound(a, b string, f func(loadResult) float64) spread {
	x, y := r.series[a], r.series[b]
	var q []float64
	for i := range min(len(x), len(y)) {
		if d := f(y[i]); d > 0 {
			q = append(q, f(x[i])/d)
		}
	}
	return spreadOf(q)
}

func (r *results) has(series ...string) bool {
	for _, s := range series {
		if len(r.series[s]) == 0 {
			return false
		}
	}
	return true
}

func metIf(ok func(float64) bool, v float64) string {
	if ok == nil {
		return "—"
	}
	return met(ok(v))
}

func atMost(x float64) func(float64) bool  { return func(v float64) bool { return v > 0 && v <= x } }
func atLeast(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }

func (r *results) rows() []row {
	c := r.cfg
	var rows []row
	add := func(x row) { rows = append(rows, x) }
	small, large := num(min(c.smallKeys, c.largeKeys)), num(c.largeKeys)
	// cmp compares series a with its baseline b by f, ratio round by round.
	cmp := func(figure, a, bLabel, b string, f func(loadResult) float64, show func(float64) string, unit, target string, ok func(float64) bool) {
		if !r.has(a, b) {
			return
		}
		q := r.perRound(a, b, f)
		add(row{figure, r.each(a, f).show(show) + unit, bLabel + " " + r.each(b, f).show(show) + unit, q.show(showRatio), target, metIf(ok, q.med)})
	}
	// CPU per request first: it holds across machines where throughput
	// does not (it does not depend on how the scheduler shares the cores).
	cmp("**Server CPU per request**, valid keys, "+small+" keys", sAfter, "bare handler", sBare, cpuReq, showDur, "", "≤ 1.25", atMost(1.25))
	cmp("**Server CPU per request**, valid keys, "+large+" keys", sLAfter, "bare handler", sLBare, cpuReq, showDur, "", "≤ 1.25", atMost(1.25))
	cmp("Server CPU per request, unknown keys", sAfterUnknown, "valid keys", sAfter, cpuReq, showDur, "", "≤ 1.0", atMost(1.0))
	cmp("Server CPU per request, malformed keys", sAfterMalform, "valid keys", sAfter, cpuReq, showDur, "", "≤ 1.0", atMost(1.0))
	cmp("Verify throughput, pinned, valid keys, "+small+" keys", sAfter, "bare handler", sBare, rpsOf, showRPS, " req/s", "≥ 0.85", atLeast(0.85))
	cmp("Verify throughput, unpinned, valid keys, "+small+" keys", sUAfter, "bare handler", sUBare, rpsOf, showRPS, " req/s", "≥ 0.85", atLeast(0.85))
	if r.has(sUBareTH) {
		// Not the auth server: how near net/http alone, with the same
		// timeouts and headers, comes to the target above.
		cmp("Throughput, unpinned, bare handler + the auth server's timeouts and headers", sUBareTH, "bare handler", sUBare, rpsOf, showRPS, " req/s", "reported", nil)
	}
	// The same binary with net/http serving every request: what the
	// keep-alive takeover wins, in the same rounds.
	cmp("Server CPU per request, valid keys, "+small+" keys, `--keepalive-takeover=false`", sAfterNH, "bare handler", sBare, cpuReq, showDur, "", "reported", nil)
	cmp("Verify throughput, unpinned, valid keys, "+small+" keys, `--keepalive-takeover=false`", sUAfterNH, "bare handler", sUBare, rpsOf, showRPS, " req/s", "reported", nil)
	cmp("Verify throughput, pinned, valid keys, "+large+" keys", sLAfter, "bare handler", sLBare, rpsOf, showRPS, " req/s", "≥ 0.85", atLeast(0.85))
	cmp("Throughput, unknown well-formed keys", sAfterUnknown, "valid keys", sAfter, rpsOf, showRPS, " req/s", "≥ 1.0", atLeast(1.0))
	cmp("Throughput, malformed keys (bad checksum)", sAfterMalform, "valid keys", sAfter, rpsOf, showRPS, " req/s", "≥ 1.0", atLeast(1.0))
	cmp("p50 latency, "+large+" keys", sLAfter, small+" keys", sLAfterSmall, p50Of, showDur, "", "≤ 1.10", atMost(1.10))
	cmp("p99 latency, "+large+" keys", sLAfter, small+" keys", sLAfterSmall, p99Of, showDur, "", "≤ 1.10", atMost(1.10))
	// Memory after the load runs, anonymous and file-backed, beside the
	// bare handler's (the targets: 30 MiB at 1,000 keys, 60 MiB at
	// 100,000).
	if a := r.after; a.memSmall.rss > 0 && r.bareSmall.rss > 0 {
		s, _ := ratio(float64(a.memSmall.rss), float64(r.bareSmall.rss))
		add(row{"**Auth server RSS**, " + small + " keys", a.memSmall.String(), "bare handler " + r.bareSmall.String(), s, "≤ 30 MiB", met(a.memSmall.rss <= 30<<20)})
	}
	if a, f := r.after, r.fullSmall; a.memSmall.rss > 0 && f.rss > 0 {
		s, _ := ratio(float64(f.rss), float64(a.memSmall.rss))
		add(row{"Auth server RSS, " + small + " keys, the full binary (`meterr-operator auth-server`)", f.String(), "meterr-auth-server " + mib(a.memSmall.rss), s, "reported", "—"})
	}
	if a := r.after; a.rssLarge > 0 {
		v := mem{rss: a.rssLargeLoaded, anon: a.rssLargeAnon, file: a.rssLargeFile}.String()
		if a.rssLargeReady > a.rssLargeLoaded {
			v += ", at ready " + mib(a.rssLargeReady)
		}
		b := "bare handler " + r.bareLarge.String()
		of := float64(r.bareLarge.rss)
		if r.bareLarge.rss == 0 {
			b, of = small+" keys "+mib(a.rssSmall), float64(a.rssSmall)
		}
		s, _ := ratio(float64(a.rssLarge), of)
		add(row{"**Auth server RSS**, " + large + " keys", v, b, s, "≤ 60 MiB", met(a.rssLarge <= 60<<20)})
		base, of := "the harness listing them "+dur(r.listLarge), float64(r.listLarge)
		if r.listLarge == 0 {
			base, of = small+" records "+dur(a.readySmall), float64(a.readySmall)
		}
		s, _ = ratio(float64(a.readyLarge), of)
		add(row{"Auth server start-up to ready, " + large + " records", dur(a.readyLarge), base, s, "< 30 s", met(a.readyLarge < 30*time.Second)})
	}
	if r.prop != nil {
		for _, k := range []struct{ key, what string }{{"add", "new key accepted"}, {"delete", "deleted record refused"}, {"disable", "disabled key refused"}} {
			v, b := r.prop[k.key].pct(0.99), r.prop[k.key+"-watch"].pct(0.99)
			s, _ := ratio(float64(v), float64(b))
			add(row{"Propagation p99: " + k.what, dur(v), "harness's own watch " + dur(b), s, "< 25 ms", met(v < 25*time.Millisecond)})
		}
	}
	if r.apply.n() > 0 {
		v, b := r.apply.pct(0.99), r.applySecret.pct(0.99)
		s, _ := ratio(float64(v), float64(b))
		add(row{"MeterrAPIKey created → key accepted, p99", dur(v), "workload Secret seen " + dur(b), s, "< 250 ms", met(v < 250*time.Millisecond)})
	}
	if r.revoke.n() > 0 {
		add(row{"Key reported leaked → refused, p50 / p99", dur(r.revoke.pct(0.5)) + " / " + dur(r.revoke.pct(0.99)), "—", "—", "p99 < 1 s", met(r.revoke.pct(0.99) < time.Second)})
	}
	rows = append(rows, r.fleetRows(r.fleet)...)
	if g := r.goBench; len(g) > 0 {
		bare, okBare := g["BenchmarkBareHandler"]
		for _, n := range []string{"100", "100000"} {
			hit, ok := g["BenchmarkHandlerVerify/keys="+n+"/hit"]
			if !ok {
				continue
			}
			label := num(atoi(n))
			if okBare {
				s, _ := ratio(hit.nsOp, bare.nsOp)
				add(row{"Go: handler, verify hit, " + label + " keys", fmt.Sprintf("%.0f ns/op, %.0f allocs/op", hit.nsOp, hit.allocsOp),
					fmt.Sprintf("bare handler %.0f ns/op, %.0f allocs/op", bare.nsOp, bare.allocsOp), s, "reported", "—"})
			}
			for _, k := range []string{"miss", "malformed"} {
				m, ok := g["BenchmarkHandlerVerify/keys="+n+"/"+k]
				if !ok {
					continue
				}
				s, q := ratio(m.nsOp, hit.nsOp)
				add(row{"Go: handler, verify " + k + ", " + label + " keys", fmt.Sprintf("%.0f ns/op, %.0f allocs/op", m.nsOp, m.allocsOp),
					fmt.Sprintf("hit %.0f ns/op", hit.nsOp), s, "≤ 1.0", met(q <= 1.0)})
			}
		}
		if c, ok := g["BenchmarkGRPCCheck"]; ok {
			if bare, okBare := g["BenchmarkGRPCBare"]; okBare {
				// Throughput is the inverse of ns/op: bare/check is
				// the auth server's share of the bare server's calls/s.
				s, q := ratio(bare.nsOp, c.nsOp)
				add(row{"Go: gRPC ext_authz Check throughput, hit, 100,000 keys (loopback, calls from every P)",
					fmt.Sprintf("%.0f calls/s (%.0f ns/op), %.0f allocs/op", 1e9/max(c.nsOp, 1), c.nsOp, c.allocsOp),
					fmt.Sprintf("bare gRPC server, the same fixed answer: %.0f calls/s", 1e9/max(bare.nsOp, 1)), s, "≥ 0.85", met(q >= 0.85)})
				s, _ = ratio(c.cpuNsOp, bare.cpuNsOp)
				add(row{"Go: gRPC ext_authz Check, CPU per call (client and server in one process)",
					fmt.Sprintf("%.1f µs", c.cpuNsOp/1e3), fmt.Sprintf("bare gRPC server %.1f µs", bare.cpuNsOp/1e3), s, "reported", "—"})
			}
		}
		h1, ok1 := g["BenchmarkHandlerVerify/keys=100/hit"]
		h2, ok2 := g["BenchmarkHandlerVerify/keys=100000/hit"]
		if ok1 && ok2 {
			s, _ := ratio(h2.nsOp, h1.nsOp)
			add(row{"Go: handler, verify hit, 100,000 vs 100 keys", fmt.Sprintf("%.0f ns/op", h2.nsOp), fmt.Sprintf("100 keys %.0f ns/op", h1.nsOp), s, "reported", "—"})
		}
	}
	return rows
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func (r *results) table() string {
	var b strings.Builder
	b.WriteString("| figure | value | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n")
	for _, x := range r.rows() {
		m := x.met
		if r.cfg.smoke && m != "—" {
			m = "(smoke)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.figure, x.value, x.baseline, x.ratio, x.target, m)
	}
	return b.String()
}

func machine() (cpu, mem, kernel string) {
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return
}

func (r *results) markdown() string {
	c := r.cfg
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cpu, mem, kernel := machine()
	w("# Benchmarks\n\n")
	if c.smoke {
		w("**Smoke run** (`hack/bench.sh --smoke`): tiny sizes that check the harness works. These figures are not\n")
		w("comparable with the targets; `make bench` produces the real report.\n\n")
	}
	w("Written by `make bench` (hack/bench.sh, test/bench/) on %s. Every figure has its baseline measured in the same\n", r.finished.UTC().Format("2006-01-02 15:04 MST"))
	w("run on the same machine; the targets are those of the performance issue. Benchmarks are not timed tests: a\n")
	w("figure that misses its target is reported here, not failed.\n\n")
	w("## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| CPUs (nproc) | %d |\n| CPU model | %s |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n", runtime.NumCPU(), cpu, mem, kernel, runtime.Version())
	w("| load generator | %s |\n", r.tool)
	w("| date | %s, run took %s |\n", r.finished.UTC().Format(time.RFC3339), r.finished.Sub(r.started).Round(time.Second))
	w("| load average (1, 5, 15 min) | %s at the start, %s at the end: the machine is shared, so the figures carry its noise |\n\n", r.loadStart, r.loadEnd)

	w("## Results\n\n")
	w("Each load figure is **median (min–max)** over %d interleaved rounds; a ratio is taken within each round (the runs of one\n", c.rounds)
	w("round are seconds apart, so the machine's drift falls on both sides) and its median, min and max are over the rounds. Targets\n")
	w("are judged on the median. CPU per request comes first: it is what holds across machines of the same kind, where throughput\n")
	w("ratios move with how the scheduler shares the cores (`make bench` elsewhere gave a pinned throughput ratio of 0.76 where this\n")
	w("file once said 0.86, with CPU per request at 1.16–1.20 of the bare handler on both).\n\n")
	w("%s\n", r.table())
	if ba := r.beforeAfterTable(); ba != "" {
		w("## Before and after\n\n")
		if c.smoke {
			w("Smoke run: the current binary stands in for the base revision's, to check the harness's before/after path.\n")
		}
		w("The base revision's binary (`%s`, built by hack/bench.sh from BENCH_BASE into bin/bench-base/) measured in the same rounds as\n", c.baseRev)
		w("the binary under test: each round runs bare, after and before one after the other. \"÷ bare handler's\" rows are each binary's\n")
		w("ratio to the bare handler of its round, and the after ÷ before column is the ratio of their medians.\n")
		if r.fleetBase.ctrlKeys == 0 {
			w("The fleet (%s keys Ready, rotation wave) is measured with the current manager only: `hack/bench.sh -- -fleet-base`\n", num(c.ctrlKeys))
			w("adds the base revision's manager, on a control plane of its own, at the cost of doubling the controller phase.\n")
		}
		w("\n%s\n", ba)
	} else if !c.smoke {
		w("_No before/after: the harness ran without `-base-bin` (BENCH_BASE empty or not in this clone's history)._\n\n")
	}

	w("## How it was measured\n\n")
	pin := "not pinned (one CPU)"
	if c.serverCPUs != "" {
		pin = fmt.Sprintf("**pinned**: the servers on CPU %s and the load generator on CPU %s with `taskset` (so each server runs with GOMAXPROCS=1)", c.serverCPUs, c.loadCPUs)
	}
	authCmd := "`meterr-operator auth-server`"
	if c.authBin != "" {
		authCmd = "`meterr-auth-server`, the image's slim binary that the Deployments run"
	}
	w("- **Load tests**: the auth server binary (%s, records loaded from a local kube-apiserver) and a bare\n", authCmd)
	w("  `net/http` handler that writes a fixed JSON body of the same size (`test/bench/cmd/bare`), each a separate process,\n")
	w("  %s", pin)
	if c.unpinned {
		w("; and **unpinned**: a second set of servers started without `taskset` (GOMAXPROCS the machine's %d), the load\n", runtime.NumCPU())
		w("  generator unpinned too, so the scheduler shares the cores as it would in a pod without CPU pinning")
	}
	w(".\n  Load: %s, 1 thread, %d keep-alive connections, %s per run, %d rounds. A %s-key round runs: %s.\n", r.tool, c.conns, c.duration, c.rounds,
		num(min(c.smallKeys, c.largeKeys)), r.orderSmall)
	w("  Each run cycles through %d distinct keys (picked at random across the whole index). Valid keys have an hourly limit of %s,\n", c.probeKeys, num(benchLimit))
	w("  so the in-memory limiter and the rate-limit headers are on the path. Server CPU per request is utime+stime from\n")
	w("  `/proc/<pid>/stat` over the run, divided by the requests. Latency percentiles are the load generator's (closed loop, so they\n")
	w("  are mostly queueing at this concurrency). A %s-key round runs: %s; the servers with %s and with %s keys run side by\n",
		num(c.largeKeys), r.orderLarge, num(min(c.smallKeys, c.largeKeys)), num(c.largeKeys))
	w("  side (records in namespaces of their own), so the latency ratios compare them under the same machine load. The control\n")
	w("  plane's CPU during each run is in the harness's log (it is small).\n")
	if len(r.series) > 0 {
		w("- Every run:\n\n")
		w("  | series | round | req/s | p50 | p99 | server CPU/req | non-2xx | socket errors |\n  |---|---|---|---|---|---|---|---|\n")
		sm, lg := num(min(c.smallKeys, c.largeKeys)), num(c.largeKeys)
		for _, x := range []struct{ key, name string }{
			{sBare, "bare, " + sm + " keys"}, {sBareT, "bare + timeouts"}, {sBareTH, "bare + timeouts + headers"},
			{sAfter, "after, valid"}, {sAfterUnknown, "after, unknown"}, {sAfterMalform, "after, malformed"},
			{sAfterNH, "after, valid, --keepalive-takeover=false"}, {sBefore, "before, valid"},
			{sUBare, "unpinned: bare"}, {sUBareTH, "unpinned: bare + timeouts + headers"}, {sUAfter, "unpinned: after, valid"},
			{sUAfterNH, "unpinned: after, valid, --keepalive-takeover=false"},
			{sUBefore, "unpinned: before, valid"},
			{sLBare, "bare, " + lg + " keys"}, {sLAfterSmall, "after, " + sm + " keys, beside the large index"}, {sLAfter, "after, " + lg + " keys"},
			{sLBeforeSmall, "before, " + sm + " keys, beside the large index"}, {sLBefore, "before, " + lg + " keys"},
		} {
			for i, l := range r.series[x.key] {
				w("  | %s | %d | %s | %s | %s | %s | %d | %d |\n", x.name, i+1, num(int(l.RPS)), dur(l.P50), dur(l.P99), dur(l.cpuPerRequest()), l.Non2xx, l.Errors)
			}
		}
		w("\n")
	}
	if r.has(sBare, sBareT, sBareTH, sAfter) {
		w("- **Where the gap to the bare handler goes** (same rounds, %s keys, pinned): the bare server again with the auth server's four HTTP\n", num(min(c.smallKeys, c.largeKeys)))
		w("  timeouts (read-header 5 s, read 10 s, write 10 s, idle 120 s), then also with the eight headers of a verify answer for a\n")
		w("  limited key; the rest is the auth server's own work (parse, hash, lookup, limiter, answer, metrics, and its GC).\n")
		w("  The auth server enforces the same timeouts with a sweep every 100 ms instead of a timer per deadline\n")
		w("  (docs/auth-server.md, Hardening), which wins back most of what the timeouts cost the bare server, and after a\n")
		w("  connection's first request writes its answers without net/http's per-request work (--keepalive-takeover,\n")
		w("  docs/auth-server.md, Keep-alive connections): with it, less CPU than the bare handler itself; without it, the last row.\n\n")
		w("  | server | req/s (median) | vs bare | server CPU/req (median) | added CPU/req |\n  |---|---|---|---|---|\n")
		prev := 0.0
		for i, x := range []struct{ name, key string }{{"bare handler", sBare}, {"+ the auth server's HTTP timeouts", sBareT},
			{"+ the verify answer's headers", sBareTH}, {"auth server, valid keys", sAfter},
			{"auth server, valid keys, `--keepalive-takeover=false`", sAfterNH}} {
			cpu := r.each(x.key, cpuReq).med
			added := "—"
			if i > 0 {
				added = "+" + showDur(cpu-prev)
				if cpu < prev {
					added = "−" + showDur(prev-cpu)
				}
			}
			w("  | %s | %s | %s | %s | %s |\n", x.name, showRPS(r.each(x.key, rpsOf).med), showRatio(r.perRound(x.key, sBare, rpsOf).med), showDur(cpu), added)
			prev = cpu
		}
		w("\n")
	}
	for _, x := range []struct {
		name string
		st   serverStats
	}{{"", r.after}, {"the base revision's", r.before}} {
		st := x.st
		if st.rssLargeReady == 0 {
			continue
		}
		who := "auth server"
		if x.name != "" {
			who = x.name + " auth server"
		}
		w("- **Memory** (%s): VmRSS with %s keys %s right after ready, %s after the load runs (Go heap in use %s);\n",
			who, num(c.largeKeys), mib(st.rssLargeReady), mib(st.rssLargeLoaded), mib(st.heapLarge))
		w("  with %s keys %s (heap in use %s).\n", num(min(c.smallKeys, c.largeKeys)), mib(st.rssSmall), mib(st.heapSmall))
		if st.rssLargePeak > 0 {
			w("  After the load runs with %s keys: %s anonymous, %s file-backed (the binary's pages); peak VmRSS (VmHWM) %s,\n",
				num(c.largeKeys), mib(st.rssLargeAnon), mib(st.rssLargeFile), mib(st.rssLargePeak))
			w("  reached while the initial list was loading (a memory limit must allow for it).\n")
		}
	}
	if r.bareSmall.rss > 0 {
		w("- **Memory split** (VmRSS, RssAnon and RssFile of /proc/<pid>/status, each after its load runs): anonymous pages are the heap,\n")
		w("  stacks and runtime; file-backed ones are the pages of the binary the process touched (package initialisation, the code it\n")
		w("  runs). The bare handler: %s after the %s-key rounds, %s after the %s-key ones.\n",
			r.bareSmall, num(min(c.smallKeys, c.largeKeys)), r.bareLarge, num(c.largeKeys))
		if r.fullSmall.rss > 0 {
			w("  The full binary's `meterr-operator auth-server` (the manager, controllers and tools linked too), in the same rounds\n")
			w("  with %s keys: %s.\n", num(min(c.smallKeys, c.largeKeys)), r.fullSmall)
		}
	}
	if r.createLargeN > 0 {
		w("- **Records**: %s record Secrets created directly in the records namespace (`record.Encode`, `record.Labels()`), %d concurrent\n", num(r.createLargeN), c.createWorkers)
		w("  creates, in %s (%s records/s). Start-up is from the process's start to `/readyz` answering 200; RSS is VmRSS after\n", dur(r.createLarge), num(int(float64(r.createLargeN)/r.createLarge.Seconds())))
		w("  the load runs. Both binaries run from copies hack/bench.sh writes to its work directory just before the run: how a binary\n")
		w("  got into the page cache changes its file-backed RSS (one freshly written by the linker mapped about 7 MiB more than a copy),\n")
		w("  so before and after are copied alike.\n")
	}
	if r.prop != nil {
		w("- **Propagation** (%d samples each, polling `/v1/auth/verify` every %s over keep-alive): from the moment the API server's\n", r.prop["add"].n(), c.pollInterval)
		w("  Create/Update/Delete call returns to the first correct answer (200 for a new key; 401 after `disabled: true` or the record's\n")
		w("  deletion), with %s records loaded. Baseline: when a plain watch in the harness receives the same event (0 when the event\n", num(c.largeKeys))
		w("  arrives before the API call's own response).\n\n")
		w("  | change | p50 | p90 | p99 | max | harness watch p50 | harness watch p99 |\n  |---|---|---|---|---|---|---|\n")
		for _, k := range []string{"add", "disable", "delete"} {
			s, wt := r.prop[k], r.prop[k+"-watch"]
			w("  | %s | %s | %s | %s | %s | %s | %s |\n", k, dur(s.pct(0.5)), dur(s.pct(0.9)), dur(s.pct(0.99)), dur(s.pct(1)), dur(wt.pct(0.5)), dur(wt.pct(0.99)))
		}
		w("\n")
	}
	if r.apply.n() > 0 {
		w("- **MeterrAPIKey created → accepted** (%d samples, sequential): the manager and the auth server binaries run against a fresh\n", r.apply.n())
		w("  control plane (CRD installed with `kubectl apply --server-side`); the harness creates a MeterrAPIKey, reads its key from the\n")
		w("  workload Secret through a watch, and polls verify. p50 %s, p99 %s; the workload Secret was seen after p50 %s, p99 %s.\n",
			dur(r.apply.pct(0.5)), dur(r.apply.pct(0.99)), dur(r.applySecret.pct(0.5)), dur(r.applySecret.pct(0.99)))
	}
	if r.revoke.n() > 0 {
		w("- **Key reported leaked → refused** (%d samples, sequential, on the same binaries): the harness files a revocation request as\n", r.revoke.n())
		w("  `meterr-operator revoke` does (the annotation on the MeterrAPIKey) and polls verify with the key until `401 invalid_api_key`.\n")
		w("  p50 %s, p99 %s.\n", dur(r.revoke.pct(0.5)), dur(r.revoke.pct(0.99)))
	}
	if f := r.fleet; f.ctrlKeys > 0 {
		w("- **Fleet**: %s MeterrAPIKeys created by %d concurrent creates; Ready means condition Ready=True, a current key and\n", num(f.ctrlKeys), c.createWorkers)
		w("  observedGeneration = generation, followed through an informer. The rotation wave sets `spec.rotation.requestedAt` to the\n")
		w("  current second on all of them (merge patch); rotated means a current key issued at or after it, a previous key listed, and\n")
		w("  Ready. The auth server is stopped during this part. Manager flags: `%s`. Reconciles are\n", r.managerFlags)
		w("  `controller_runtime_reconcile_total{controller=\"meterrapikey\"}` from the manager's metrics endpoint (plain HTTP), counted\n")
		w("  until it stays still for 3 s; \"while idle\" is the count over 2 s after each wave settled. Reconcile errors (mostly\n")
		w("  optimistic-concurrency conflicts, retried): %.0f during creation, %.0f during rotation. Manager RSS at the end: %s.\n",
			f.reconcileErrorsCreate, f.reconcileErrorsRotate, mib(f.managerRSS))
		w("  **Baseline, the API server write rate**: on the same control plane, before the manager starts, the harness alone creates\n")
		w("  %s MeterrAPIKeys with the same concurrency (%s), then merge-patches each once as the rotation wave does (%s), then deletes\n",
			num(f.ctrlKeys), dur(f.writeCreate), dur(f.writePatch))
		w("  them. The fleet's ratios to it are what should hold on another machine of the same kind; the absolute times scale with\n")
		w("  its API server. During the waves themselves the harness's creates took %s and its patches %s (sharing the API server\n",
			dur(f.createSubmit), dur(f.rotateSubmit))
		w("  with the manager).\n")
		if f.replayCreate > 0 {
			w("  **The fleet's floor**: on the same control plane, before the manager starts, the harness alone makes for %s keys, with\n", num(f.ctrlKeys))
			w("  %d workers (each takes one key through all its writes), the writes the manager makes (of the same kinds and sizes, in\n", c.createWorkers)
			w("  its order, each at the resource version of the one before): create, finalizer patch, record create, workload Secret\n")
			w("  create, status patch (%s); then the harness's patch, record apply, workload Secret apply, record apply, status patch\n", dur(f.replayCreate))
			w("  (%s), while informers like the manager's\n", dur(f.replayRotate))
			w("  and the harness's watch. Nothing is reconciled, generated or hashed per key. The fleet over its floor is what the manager\n")
			w("  adds to its writes; the floor over the write rate is what those writes cost this API server. Machine CPU per key is\n")
			w("  utime+stime from `/proc/<pid>/stat` of the API server, etcd, the manager and the harness over each wave, divided by the keys.\n")
		}
		if b := r.fleetBase; b.ctrlKeys > 0 {
			w("  The base revision's manager ran the same fleet on a control plane of its own (write rate there: create %s, patch %s):\n",
				dur(b.writeCreate), dur(b.writePatch))
			w("  all Ready after %s, all rotated after %s, %.2f and %.2f reconciles per key, RSS %s.\n",
				dur(b.readyAll), dur(b.rotateAll), b.reconcilesCreate, b.reconcilesRotate, mib(b.managerRSS))
		}
		if len(f.apiCreate) > 0 {
			w("- API server requests per key (`apiserver_request_total`, all clients, including the harness's own create/patch and its watch):\n\n")
			w("  | request | creation | rotation |\n  |---|---|---|\n")
			var names []string
			for k := range f.apiCreate {
				names = append(names, k)
			}
			for k := range f.apiRotate {
				if _, ok := f.apiCreate[k]; !ok {
					names = append(names, k)
				}
			}
			slices.Sort(names)
			var tc, tr float64
			for _, k := range names {
				if f.apiCreate[k] < 0.01 && f.apiRotate[k] < 0.01 {
					continue
				}
				w("  | %s | %.2f | %.2f |\n", k, f.apiCreate[k], f.apiRotate[k])
				tc += f.apiCreate[k]
				tr += f.apiRotate[k]
			}
			w("  | **total** | **%.2f** | **%.2f** |\n\n", tc, tr)
			// One request per key is the harness's own create (or patch).
			perKey := tc - 1
			w("  The manager's own requests are about %.0f per key per wave, which is why its client-side limit matters: at its default\n", perKey)
			w("  `--kube-api-qps 50` a wave of %s keys could not take less than %s; the run above used `%s`.\n\n",
				num(f.ctrlKeys), dur(time.Duration(perKey*float64(f.ctrlKeys)/50*float64(time.Second))), r.managerFlags)
		}
	}
	if r.goBenchRaw != "" {
		w("- **Go benchmarks** (`go test -run='^$' -bench=. -benchmem`): the handler alone, through a ResponseWriter that keeps headers\n")
		w("  and drops the body (test/bench/gobench); the baseline is a bare handler through the same writer.\n\n")
		w("```\n")
		failed := false
		for _, l := range strings.Split(r.goBenchRaw, "\n") {
			fail := strings.HasPrefix(l, "--- FAIL") || strings.HasPrefix(l, "FAIL")
			failed = failed || fail
			if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "pkg:") || fail ||
				(strings.HasPrefix(l, "    ") && strings.Contains(l, ".go:")) {
				w("%s\n", l)
			}
		}
		w("```\n\n")
		if failed {
			w("  **Some Go benchmarks failed** (lines marked FAIL above); `make bench` exits non-zero.\n\n")
		}
	}

	if c.goCompare != "" {
		if data, err := os.ReadFile(c.goCompare); err == nil {
			w("- **Go benchmarks, before and after** (`hack/bench-compare.sh %s`: the test binaries of both revisions run\n", c.baseName())
			w("  interleaved, compared by benchstat):\n\n```\n%s\n```\n\n", strings.TrimSpace(string(data)))
		}
	}
	w("## Reproduce\n\n")
	w("```sh\n")
	w("make bench                     # everything, before (BENCH_BASE) and after; writes docs/benchmarks.md (about 15 minutes on 2 cores)\n")
	w("make bench BENCH_BASE=         # without the before side\n")
	w("hack/bench.sh --smoke          # tiny sizes, 1-2 minutes; part of make test; report to a temporary file\n")
	w("hack/bench.sh -- -fleet-base   # also the fleet with the base revision's manager (adds about 10 minutes)\n")
	w("make bench-compare BASE=%s    # the Go benchmarks at BASE and now, interleaved, through benchstat\n", or(c.baseName(), "REV"))
	w("go test -run='^$' -bench=. -benchmem ./internal/... ./webhookserver/... ./test/bench/...   # the Go benchmarks only\n")
	w("```\n\n")
	w("hack/bench.sh installs wrk with apt-get when it is missing (and falls back to test/bench/cmd/load if that fails), builds the\n")
	w("binaries (the base revision's once per commit, into bin/bench-base/<commit>/), runs the Go benchmarks and then the harness\n")
	w("test/bench/cmd/bench, whose flags (`go run ./test/bench/cmd/bench -h`) set every size. A load run by hand:\n\n")
	w("```sh\n")
	w("taskset -c %s bin/meterr-operator auth-server --kubeconfig K --listen 127.0.0.1:8080 --metrics-bind-address 127.0.0.1:9090 &\n", or(c.serverCPUs, "0"))
	w("taskset -c %s wrk -t1 -c%d -d%s --latency -H \"Authorization: Bearer $KEY\" http://127.0.0.1:8080/v1/auth/verify\n", or(c.loadCPUs, "1"), c.conns, c.duration)
	w("```\n")
	return b.String()
}

// baseName is the base revision's commit as the harness was told it ("2a397c1
// 2026-11-30": the first word).
func (c config) baseName() string {
	if f := strings.Fields(c.baseRev); len(f) > 0 && c.baseBin != c.bin {
		return f[0]
	}
	return ""
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
