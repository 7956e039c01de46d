package main

import (
	"fmt"
	"strings"
	"time"
)

// fleetRows are the fleet's figures, each beside the API server write-rate
// baseline of its own control plane: the same number of objects created (or
// patched) by the harness alone.
func (r *results) fleetRows(f fleetStats) []row {
	if f.ctrlKeys == 0 || (f.readyAll == 0 && !f.readyTimedOut) {
		return nil
	}
	var rows []row
	add := func(x row) { rows = append(rows, x) }
	n := num(f.ctrlKeys)
	createBase := "API server write rate: the harness alone creating " + n + " " + dur(f.writeCreate)
	patchBase := "API server write rate: the harness alone patching " + n + " " + dur(f.writePatch)
	// Issue 27's targets: each wave within 4x the time the API server
	// alone takes to write as many objects, at most 5 requests per key.
	const waveTarget, requestTarget = 4.0, 5.0
	waveMet := func(v, base time.Duration) string { return met(float64(v) <= waveTarget*float64(base)) }
	if f.readyTimedOut {
		add(row{n + " MeterrAPIKeys created at once → all Ready", fmt.Sprintf("> %s (%s Ready)", dur(f.readyAll), num(f.readyDone)),
			createBase, "—", "≤ 4", met(false)})
		return rows
	}
	s, _ := ratio(float64(f.readyAll), float64(f.writeCreate))
	add(row{"**" + n + " MeterrAPIKeys created at once → all Ready**", dur(f.readyAll), createBase, s, "≤ 4", waveMet(f.readyAll, f.writeCreate)})
	add(row{"Reconciles per key, creation", fmt.Sprintf("%.2f", f.reconcilesCreate), "—", "—", "reported", "—"})
	if f.rotateTimedOut {
		add(row{"Rotation wave of " + n + " → all rotated", fmt.Sprintf("> %s (%s rotated)", dur(f.rotateAll), num(f.rotatedDone)),
			patchBase, "—", "≤ 4", met(false)})
	} else {
		s, _ = ratio(float64(f.rotateAll), float64(f.writePatch))
		add(row{"**Rotation wave of " + n + " → all rotated**", dur(f.rotateAll), patchBase, s, "≤ 4", waveMet(f.rotateAll, f.writePatch)})
	}
	if f.writeCreateCPU > 0 && f.createCPU > 0 {
		cpuRow := func(what string, v, base float64, baseWhat string) {
			s, _ := ratio(v, base)
			add(row{"API server CPU per key, " + what, fmt.Sprintf("%.2f ms", v*1e3), fmt.Sprintf("%s: %.2f ms", baseWhat, base*1e3), s, "reported", "—"})
		}
		cpuRow("creation wave", f.createCPU, f.writeCreateCPU, "the harness's create alone")
		if f.rotateCPU > 0 {
			cpuRow("rotation wave", f.rotateCPU, f.writePatchCPU, "the harness's patch alone")
		}
	}
	if f.replayCreate > 0 {
		// The floor: the same writes without the manager. What the fleet
		// takes over it is the manager's; what it takes over the write
		// rate is the writes'.
		floorRow := func(what string, floor, base, fleet time.Duration, baseWhat string) {
			s, _ := ratio(float64(floor), float64(base))
			add(row{"The fleet's floor, " + what + ": the manager's writes for " + n + " keys replayed by the harness alone",
				dur(floor), baseWhat, s, "reported", "—"})
			if fleet > 0 {
				s, _ = ratio(float64(fleet), float64(floor))
				add(row{"The fleet's " + what + " ÷ its floor (what the manager adds to its writes)", dur(fleet), "the floor " + dur(floor), s, "reported", "—"})
			}
		}
		floorRow("creation", f.replayCreate, f.writeCreate, f.readyAll, createBase)
		if !f.rotateTimedOut {
			floorRow("rotation", f.replayRotate, f.writePatch, f.rotateAll, patchBase)
		}
		splitRow := func(what string, v, base cpuSplit, baseWhat string) {
			if v.total() <= 0 || base.total() <= 0 {
				return
			}
			s, _ := ratio(v.total(), base.total())
			add(row{"Machine CPU per key, " + what, fmt.Sprintf("%.2f ms (%s)", v.total()*1e3, v), fmt.Sprintf("%s: %.2f ms (%s)", baseWhat, base.total()*1e3, base), s, "reported", "—"})
		}
		splitRow("creation wave", f.fleetCreateCPU, f.writeCreateSplit, "the harness's create alone")
		splitRow("the floor's creation", f.replayCreateCPU, f.writeCreateSplit, "the harness's create alone")
		splitRow("rotation wave", f.fleetRotateCPU, f.writePatchSplit, "the harness's patch alone")
		splitRow("the floor's rotation", f.replayRotateCPU, f.writePatchSplit, "the harness's patch alone")
	}
	add(row{"Reconciles per key per rotation", fmt.Sprintf("%.2f", f.reconcilesRotate), "—", "—", "reported", "—"})
	if len(f.apiCreate) > 0 {
		base := func(m map[string]float64) string {
			if b := r.fleetBase; b.ctrlKeys > 0 && len(m) > 0 {
				return fmt.Sprintf("the base revision's manager, same fleet: %.2f", sum(m))
			}
			return "the harness's own request: 1.00"
		}
		add(row{"**API requests per key, creation** (all clients, the harness's create included)", fmt.Sprintf("%.2f", sum(f.apiCreate)),
			base(r.fleetBase.apiCreate), "—", "≤ 5", met(sum(f.apiCreate) <= requestTarget+0.005)})
		if len(f.apiRotate) > 0 {
			add(row{"**API requests per key, rotation** (all clients, the harness's patch included)", fmt.Sprintf("%.2f", sum(f.apiRotate)),
				base(r.fleetBase.apiRotate), "—", "≤ 5", met(sum(f.apiRotate) <= requestTarget+0.005)})
		}
	}
	add(row{"Reconciles while idle after the waves (hot-looping)", fmt.Sprintf("%.0f", f.idleReconciles), "—", "—", "0", met(f.idleReconciles == 0)})
	return rows
}

// baRow is one line of the before/after table.
type baRow struct {
	figure, before, after, ratio, target, met string
}

// beforeAfter compares the base revision's binary with the one under test,
// both measured in the same rounds (and, for the fleet, each on a control
// plane of its own).
func (r *results) beforeAfter() []baRow {
	c := r.cfg
	var rows []baRow
	add := func(x baRow) { rows = append(rows, x) }
	small, large := num(min(c.smallKeys, c.largeKeys)), num(c.largeKeys)
	medRatio := func(a, b spread) string {
		if a.n == 0 || b.med == 0 {
			return "—"
		}
		return showRatio(a.med / b.med)
	}
	// direct: the same figure of both binaries, their ratio round by round.
	direct := func(figure, before, after string, f func(loadResult) float64, show func(float64) string, target string, ok func(float64) bool) {
		if !r.has(before, after) {
			return
		}
		q := r.perRound(after, before, f)
		add(baRow{figure, r.each(before, f).show(show), r.each(after, f).show(show), q.show(showRatio), target, metIf(ok, q.med)})
	}
	// relative: each binary's ratio to its baseline of the same round; the
	// target is on the after side.
	relative := func(figure, before, beforeBase, after, afterBase string, f func(loadResult) float64, target string, ok func(float64) bool) {
		if !r.has(before, beforeBase, after, afterBase) {
			return
		}
		b, a := r.perRound(before, beforeBase, f), r.perRound(after, afterBase, f)
		add(baRow{figure, b.show(showRatio), a.show(showRatio), medRatio(a, b), target, metIf(ok, a.med)})
	}
	direct("**Server CPU per request**, valid keys, "+small+" keys", sBefore, sAfter, cpuReq, showDur, "≤ 1.05 (within noise)", atMost(1.05))
	relative("Server CPU per request ÷ bare handler's, "+small+" keys", sBefore, sBare, sAfter, sBare, cpuReq, "reported", nil)
	direct("**Server CPU per request**, valid keys, "+large+" keys", sLBefore, sLAfter, cpuReq, showDur, "≤ 1.05 (within noise)", atMost(1.05))
	relative("Verify throughput ÷ bare handler's, unpinned, "+small+" keys", sUBefore, sUBare, sUAfter, sUBare, rpsOf, "after ≥ 0.85", atLeast(0.85))
	relative("Verify throughput ÷ bare handler's, pinned, "+small+" keys", sBefore, sBare, sAfter, sBare, rpsOf, "reported", nil)
	relative("Verify throughput ÷ bare handler's, pinned, "+large+" keys", sLBefore, sLBare, sLAfter, sLBare, rpsOf, "reported", nil)
	relative("p50 latency, "+large+" ÷ "+small+" keys", sLBefore, sLBeforeSmall, sLAfter, sLAfterSmall, p50Of, "after ≤ 1.10", atMost(1.10))
	relative("p99 latency, "+large+" ÷ "+small+" keys", sLBefore, sLBeforeSmall, sLAfter, sLAfterSmall, p99Of, "after ≤ 1.10", atMost(1.10))
	direct("Server CPU per request, valid keys, "+small+" keys, the full binary (`meterr-operator auth-server`) as after", sBefore, sAfterFull, cpuReq, showDur, "reported", nil)
	if b, a := r.before.memSmall, r.after.memSmall; b.rss > 0 && a.rss > 0 {
		s, _ := ratio(float64(a.rss), float64(b.rss))
		add(baRow{"**Auth server RSS**, " + small + " keys", b.String(), a.String(), s, "after ≤ 30 MiB", met(a.rss <= 30<<20)})
	}
	if b, a := r.before, r.after; b.rssLarge > 0 && a.rssLarge > 0 {
		s, _ := ratio(float64(a.rssLarge), float64(b.rssLarge))
		add(baRow{"**Auth server RSS**, " + large + " keys", mib(b.rssLarge), mib(a.rssLarge), s, "after ≤ 60 MiB", met(a.rssLarge <= 60<<20)})
		s, _ = ratio(float64(a.rssLargeAnon), float64(b.rssLargeAnon))
		add(baRow{"Auth server RSS, " + large + " keys, anonymous (after the load runs)", mib(b.rssLargeAnon), mib(a.rssLargeAnon), s, "reported", "—"})
		s, _ = ratio(float64(a.rssLargeFile), float64(b.rssLargeFile))
		add(baRow{"Auth server RSS, " + large + " keys, file-backed (after the load runs)", mib(b.rssLargeFile), mib(a.rssLargeFile), s, "reported", "—"})
		s, _ = ratio(float64(a.heapLarge), float64(b.heapLarge))
		add(baRow{"Go heap in use, " + large + " keys", mib(b.heapLarge), mib(a.heapLarge), s, "reported", "—"})
		s, _ = ratio(float64(a.readyLarge), float64(b.readyLarge))
		add(baRow{"Auth server start-up to ready, " + large + " records", dur(b.readyLarge), dur(a.readyLarge), s, "reported", "—"})
	}
	if b, a := r.fleetBase, r.fleet; b.readyAll > 0 && a.readyAll > 0 && !b.readyTimedOut && !a.readyTimedOut {
		n := num(a.ctrlKeys)
		fq := func(v, base time.Duration) float64 { return float64(v) / max(1, float64(base)) }
		qb, qa := fq(b.readyAll, b.writeCreate), fq(a.readyAll, a.writeCreate)
		add(baRow{n + " keys → all Ready ÷ the write-rate baseline", fmt.Sprintf("%.2f (%s)", qb, dur(b.readyAll)),
			fmt.Sprintf("%.2f (%s)", qa, dur(a.readyAll)), showRatio(qa / qb), "reported", "—"})
		if !b.rotateTimedOut && !a.rotateTimedOut {
			qb, qa = fq(b.rotateAll, b.writePatch), fq(a.rotateAll, a.writePatch)
			add(baRow{"Rotation wave of " + n + " ÷ the write-rate baseline", fmt.Sprintf("%.2f (%s)", qb, dur(b.rotateAll)),
				fmt.Sprintf("%.2f (%s)", qa, dur(a.rotateAll)), showRatio(qa / qb), "reported", "—"})
		}
	}
	return rows
}

func (r *results) beforeAfterTable() string {
	rows := r.beforeAfter()
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| figure | before (%s) | after | after ÷ before | target | met? |\n|---|---|---|---|---|---|\n", r.cfg.baseRev)
	for _, x := range rows {
		m := x.met
		if r.cfg.smoke && m != "—" {
			m = "(smoke)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.figure, x.before, x.after, x.ratio, x.target, m)
	}
	return b.String()
}

// sum adds a map's values as the requests-per-key table does: leaving out
// those under 0.01 per key (lease renewals, the harness's metric reads).
func sum(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		if v >= 0.01 {
			t += v
		}
	}
	return t
}
