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

	bareSmall, validSmall, unknownSmall, malformedSmall runs
	bareLarge, validLarge                               runs
	// validSmallB is the small index's server again, in the rounds of the
	// large one: the baseline of the latency figures.
	validSmallB                              runs
	bareTimeouts, bareHeaders                runs
	rssLargeReady, rssLargeLoaded            int64
	rssLargePeak, rssLargeAnon, rssLargeFile int64
	heapSmall, heapLarge                     int64
	readySmall, readyLarge                   time.Duration
	rssSmall, rssLarge                       int64
	createLarge                              time.Duration
	createLargeN                             int
	prop                                     map[string]*samples

	apply, applySecret *samples

	managerFlags                                 string
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
}

func newResults(c config) *results {
	r := &results{cfg: c, started: time.Now(), apply: &samples{}, applySecret: &samples{}}
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

func rps(v float64) string { return fmt.Sprintf("%s req/s", num(int(v+0.5))) }

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

func (r *results) rows() []row {
	c := r.cfg
	var rows []row
	add := func(x row) { rows = append(rows, x) }
	small, large := num(min(c.smallKeys, c.largeKeys)), num(c.largeKeys)

	if len(r.validSmall) > 0 {
		bare, valid := r.bareSmall.median(), r.validSmall.median()
		s, q := ratio(valid.RPS, bare.RPS)
		add(row{"Verify throughput, valid keys, " + small + " keys", rps(valid.RPS), "bare handler " + rps(bare.RPS), s, "≥ 0.85", met(q >= 0.85)})
		bc, vc := r.bareSmall.cpuPerRequest(), r.validSmall.cpuPerRequest()
		s, q = ratio(float64(vc), float64(bc))
		add(row{"Server CPU per request, valid keys", dur(vc), "bare handler " + dur(bc), s, "≤ 1.25", met(q > 0 && q <= 1.25)})
		u := r.unknownSmall.median()
		s, q = ratio(u.RPS, valid.RPS)
		add(row{"Throughput, unknown well-formed keys", rps(u.RPS), "valid keys " + rps(valid.RPS), s, "≥ 1.0", met(q >= 1.0)})
		m := r.malformedSmall.median()
		s, q = ratio(m.RPS, valid.RPS)
		add(row{"Throughput, malformed keys (bad checksum)", rps(m.RPS), "valid keys " + rps(valid.RPS), s, "≥ 1.0", met(q >= 1.0)})
		uc, mc := r.unknownSmall.cpuPerRequest(), r.malformedSmall.cpuPerRequest()
		s, q = ratio(float64(uc), float64(vc))
		add(row{"Server CPU per request, unknown keys", dur(uc), "valid keys " + dur(vc), s, "≤ 1.0", met(q > 0 && q <= 1.0)})
		s, q = ratio(float64(mc), float64(vc))
		add(row{"Server CPU per request, malformed keys", dur(mc), "valid keys " + dur(vc), s, "≤ 1.0", met(q > 0 && q <= 1.0)})
	}
	if len(r.validLarge) > 0 {
		bare, valid := r.bareLarge.median(), r.validLarge.median()
		s, q := ratio(valid.RPS, bare.RPS)
		add(row{"Verify throughput, valid keys, " + large + " keys", rps(valid.RPS), "bare handler " + rps(bare.RPS), s, "≥ 0.85", met(q >= 0.85)})
		bc, vc := r.bareLarge.cpuPerRequest(), r.validLarge.cpuPerRequest()
		s, q = ratio(float64(vc), float64(bc))
		add(row{"Server CPU per request, valid keys, " + large + " keys", dur(vc), "bare handler " + dur(bc), s, "≤ 1.25", met(q > 0 && q <= 1.25)})
		base := r.validSmallB
		if len(base) == 0 {
			base = r.validSmall
		}
		p50s, p50l := base.medianP50(), r.validLarge.medianP50()
		s, q = ratio(float64(p50l), float64(p50s))
		add(row{"p50 latency, " + large + " keys", dur(p50l), small + " keys " + dur(p50s), s, "≤ 1.10", met(q <= 1.10)})
		p99s, p99l := base.medianP99(), r.validLarge.medianP99()
		s, q = ratio(float64(p99l), float64(p99s))
		add(row{"p99 latency, " + large + " keys", dur(p99l), small + " keys " + dur(p99s), s, "≤ 1.10", met(q <= 1.10)})
		s, _ = ratio(float64(r.rssLarge), float64(r.rssSmall))
		add(row{"Auth server RSS, " + large + " keys", mib(r.rssLarge), small + " keys " + mib(r.rssSmall), s, "< 100 MiB", met(r.rssLarge < 100<<20)})
		s, _ = ratio(float64(r.readyLarge), float64(r.readySmall))
		add(row{"Auth server start-up to ready, " + large + " records", dur(r.readyLarge), small + " records " + dur(r.readySmall), s, "< 30 s", met(r.readyLarge < 30*time.Second)})
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
	if r.ctrlKeys > 0 && (r.readyAll > 0 || r.readyTimedOut) {
		n := num(r.ctrlKeys)
		if r.readyTimedOut {
			add(row{n + " MeterrAPIKeys created at once → all Ready", fmt.Sprintf("> %s (%s Ready)", dur(r.readyAll), num(r.readyDone)),
				"creating them " + dur(r.createSubmit), "—", "< 3 min", met(false)})
		} else {
			s, _ := ratio(float64(r.readyAll), float64(r.createSubmit))
			add(row{n + " MeterrAPIKeys created at once → all Ready", dur(r.readyAll), "creating them " + dur(r.createSubmit), s, "< 3 min", met(r.readyAll < 3*time.Minute)})
			add(row{"Reconciles per key, creation", fmt.Sprintf("%.2f", r.reconcilesCreate), "—", "—", "reported", "—"})
			if r.rotateTimedOut {
				add(row{"Rotation wave of " + n + " → all rotated", fmt.Sprintf("> %s (%s rotated)", dur(r.rotateAll), num(r.rotatedDone)),
					"patching them " + dur(r.rotateSubmit), "—", "< 3 min", met(false)})
			} else {
				s, _ = ratio(float64(r.rotateAll), float64(r.rotateSubmit))
				add(row{"Rotation wave of " + n + " → all rotated", dur(r.rotateAll), "patching them " + dur(r.rotateSubmit), s, "< 3 min", met(r.rotateAll < 3*time.Minute)})
			}
			add(row{"Reconciles per key per rotation", fmt.Sprintf("%.2f", r.reconcilesRotate), "—", "—", "reported", "—"})
			add(row{"Reconciles while idle after the waves (hot-looping)", fmt.Sprintf("%.0f", r.idleReconciles), "—", "—", "0", met(r.idleReconciles == 0)})
		}
	}
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
	w("%s\n", r.table())

	w("## How it was measured\n\n")
	pin := "not pinned (one CPU)"
	if c.serverCPUs != "" {
		pin = fmt.Sprintf("the servers pinned to CPU %s and the load generator to CPU %s with `taskset` (so each server runs with GOMAXPROCS=1)", c.serverCPUs, c.loadCPUs)
	}
	w("- **Load tests**: the auth server binary (`meterr-operator auth-server`, records loaded from a local kube-apiserver) and a bare\n")
	w("  `net/http` handler that writes a fixed JSON body of the same size (`test/bench/cmd/bare`), both running as separate processes,\n")
	w("  %s. Load: %s, 1 thread, %d keep-alive connections, %s per run,\n", pin, r.tool, c.conns, c.duration)
	w("  %d rounds interleaving bare / valid / unknown / malformed; the table shows the median round. Each run cycles through %d distinct\n", c.rounds, c.probeKeys)
	w("  keys (picked at random across the whole index). Valid keys have an hourly limit of %s, so the in-memory limiter and the\n", num(benchLimit))
	w("  rate-limit headers are on the path. Server CPU per request is utime+stime from `/proc/<pid>/stat` over the run, divided by\n")
	w("  the requests. Latency percentiles are the load generator's (closed loop, so they are mostly queueing at this concurrency).\n")
	w("  The %s-key rounds interleave bare / the %s-key server / the %s-key server, both servers running side by side (records in\n",
		num(c.largeKeys), num(min(c.smallKeys, c.largeKeys)), num(c.largeKeys))
	w("  namespaces of their own), so the latency ratios compare them under the same machine load. The control plane's CPU during\n")
	w("  each run is in the harness's log (it is small).\n")
	if len(r.validSmall) > 0 {
		w("- Every round:\n\n")
		w("  | run | req/s | p50 | p99 | server CPU/req | non-2xx | socket errors |\n  |---|---|---|---|---|---|---|\n")
		for _, x := range []struct {
			name string
			rs   runs
		}{{"bare, " + num(min(c.smallKeys, c.largeKeys)) + " keys", r.bareSmall}, {"bare + timeouts", r.bareTimeouts},
			{"bare + timeouts + headers", r.bareHeaders}, {"valid", r.validSmall}, {"unknown", r.unknownSmall},
			{"malformed", r.malformedSmall}, {"bare, " + num(c.largeKeys) + " keys", r.bareLarge},
			{"valid, " + num(min(c.smallKeys, c.largeKeys)) + " keys, beside the large index", r.validSmallB},
			{"valid, " + num(c.largeKeys) + " keys", r.validLarge}} {
			for _, l := range x.rs {
				w("  | %s | %s | %s | %s | %s | %d | %d |\n", x.name, num(int(l.RPS)), dur(l.P50), dur(l.P99), dur(l.cpuPerRequest()), l.Non2xx, l.Errors)
			}
		}
		w("\n")
	}
	if len(r.bareHeaders) > 0 && len(r.validSmall) > 0 {
		w("- **Where the gap to the bare handler goes** (same rounds, %s keys): the bare server again with the auth server's four HTTP\n", num(min(c.smallKeys, c.largeKeys)))
		w("  timeouts (read-header 5 s, read 10 s, write 10 s, idle 120 s), then also with the eight headers of a verify answer for a\n")
		w("  limited key; the rest is the auth server's own work (parse, hash, lookup, limiter, answer, metrics, and its GC).\n")
		w("  The auth server enforces the same timeouts with a sweep every 100 ms instead of a timer per deadline\n")
		w("  (docs/auth-server.md, Hardening), which wins back most of what the timeouts cost the bare server.\n\n")
		w("  | server | req/s (median) | vs bare | server CPU/req | added CPU/req |\n  |---|---|---|---|---|\n")
		base := r.bareSmall.median().RPS
		prev := time.Duration(0)
		for i, x := range []struct {
			name string
			rs   runs
		}{{"bare handler", r.bareSmall}, {"+ the auth server's HTTP timeouts", r.bareTimeouts},
			{"+ the verify answer's headers", r.bareHeaders}, {"auth server, valid keys", r.validSmall}} {
			cpu := x.rs.cpuPerRequest()
			added := "—"
			if i > 0 {
				added = "+" + dur(cpu-prev)
				if cpu < prev {
					added = "−" + dur(prev-cpu)
				}
			}
			s, _ := ratio(x.rs.median().RPS, base)
			w("  | %s | %s | %s | %s | %s |\n", x.name, num(int(x.rs.median().RPS)), s, dur(cpu), added)
			prev = cpu
		}
		w("\n")
	}
	if r.rssLargeReady > 0 {
		w("- **Memory**: auth server VmRSS with %s keys %s right after ready, %s after the load runs (Go heap in use %s);\n",
			num(c.largeKeys), mib(r.rssLargeReady), mib(r.rssLargeLoaded), mib(r.heapLarge))
		w("  with %s keys %s (heap in use %s).\n", num(min(c.smallKeys, c.largeKeys)), mib(r.rssSmall), mib(r.heapSmall))
		if r.rssLargePeak > 0 {
			w("  After the load runs with %s keys: %s anonymous, %s file-backed (the binary's pages); peak VmRSS (VmHWM) %s,\n",
				num(c.largeKeys), mib(r.rssLargeAnon), mib(r.rssLargeFile), mib(r.rssLargePeak))
			w("  reached while the initial list was loading (a memory limit must allow for it).\n")
		}
	}
	if r.createLargeN > 0 {
		w("- **Records**: %s record Secrets created directly in the records namespace (`record.Encode`, `record.Labels()`), %d concurrent\n", num(r.createLargeN), c.createWorkers)
		w("  creates, in %s (%s records/s). Start-up is from the process's start to `/readyz` answering 200; RSS is VmRSS after\n", dur(r.createLarge), num(int(float64(r.createLargeN)/r.createLarge.Seconds())))
		w("  the load runs.\n")
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
	if r.ctrlKeys > 0 {
		w("- **Fleet**: %s MeterrAPIKeys created by %d concurrent creates; Ready means condition Ready=True, a current key and\n", num(r.ctrlKeys), c.createWorkers)
		w("  observedGeneration = generation, followed through an informer. The rotation wave sets `spec.rotation.requestedAt` to the\n")
		w("  current second on all of them (merge patch); rotated means a current key issued at or after it, a previous key listed, and\n")
		w("  Ready. The auth server is stopped during this part. Manager flags: `%s`. Reconciles are\n", r.managerFlags)
		w("  `controller_runtime_reconcile_total{controller=\"meterrapikey\"}` from the manager's metrics endpoint (plain HTTP), counted\n")
		w("  until it stays still for 3 s; \"while idle\" is the count over 2 s after each wave settled. Reconcile errors (mostly\n")
		w("  optimistic-concurrency conflicts, retried): %.0f during creation, %.0f during rotation. Manager RSS at the end: %s.\n",
			r.reconcileErrorsCreate, r.reconcileErrorsRotate, mib(r.managerRSS))
		if len(r.apiCreate) > 0 {
			w("- API server requests per key (`apiserver_request_total`, all clients, including the harness's own create/patch and its watch):\n\n")
			w("  | request | creation | rotation |\n  |---|---|---|\n")
			var names []string
			for k := range r.apiCreate {
				names = append(names, k)
			}
			for k := range r.apiRotate {
				if _, ok := r.apiCreate[k]; !ok {
					names = append(names, k)
				}
			}
			slices.Sort(names)
			var tc, tr float64
			for _, k := range names {
				if r.apiCreate[k] < 0.01 && r.apiRotate[k] < 0.01 {
					continue
				}
				w("  | %s | %.2f | %.2f |\n", k, r.apiCreate[k], r.apiRotate[k])
				tc += r.apiCreate[k]
				tr += r.apiRotate[k]
			}
			w("  | **total** | **%.2f** | **%.2f** |\n\n", tc, tr)
			// One request per key is the harness's own create (or patch).
			perKey := tc - 1
			w("  The manager's own requests are about %.0f per key per wave, which is why its client-side limit matters: at its default\n", perKey)
			w("  `--kube-api-qps 50` a wave of %s keys could not take less than %s; the run above used `%s`.\n\n",
				num(r.ctrlKeys), dur(time.Duration(perKey*float64(r.ctrlKeys)/50*float64(time.Second))), r.managerFlags)
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

	w("## Reproduce\n\n")
	w("```sh\n")
	w("make bench                     # everything; writes docs/benchmarks.md (about 10 minutes)\n")
	w("hack/bench.sh --smoke          # tiny sizes, about a minute; part of make test; report to a temporary file\n")
	w("go test -run='^$' -bench=. -benchmem ./internal/... ./webhookserver/... ./test/bench/...   # the Go benchmarks only\n")
	w("```\n\n")
	w("hack/bench.sh installs wrk with apt-get when it is missing (and falls back to test/bench/cmd/load if that fails), builds the\n")
	w("binaries, runs the Go benchmarks and then `go run ./test/bench/cmd/bench`, whose flags (`-h`) set every size. A load run by hand:\n\n")
	w("```sh\n")
	w("taskset -c %s bin/meterr-operator auth-server --kubeconfig K --listen 127.0.0.1:8080 --metrics-bind-address 127.0.0.1:9090 &\n", or(c.serverCPUs, "0"))
	w("taskset -c %s wrk -t1 -c%d -d%s --latency -H \"Authorization: Bearer $KEY\" http://127.0.0.1:8080/v1/auth/verify\n", or(c.loadCPUs, "1"), c.conns, c.duration)
	w("```\n")
	return b.String()
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
