// Package gctune sizes the garbage collector's headroom (GOGC) to the auth
// server's live heap, for as long as the server runs (--gc-tuning).
package gctune

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The garbage collector's headroom: how far the heap may grow past the live
// heap before the next collection. Go's default (GOGC=100) makes it the live
// heap itself, which is too little for a tiny index (a collection every few
// thousand requests) and too much for a large one (100,000 keys would double
// a ~35 MiB heap). The key table holds no pointers, and since the auth server
// links no scheme of every API group (docs/architecture.md, "Memory of the
// auth server") there is little else to mark, so collecting more often costs
// little at any size: a quarter of the live heap, at least 4 MiB, keeps the
// heap near its live size (the resident memory is what every replica pays).
const (
	minHeadroom   = 4 << 20
	minGCPercent  = 25
	maxGCPercent  = 400
	liveHeapGauge = "/gc/heap/live:bytes"
	gogcGauge     = "/gc/gogc:percent"
)

// gcPercentFor returns the GOGC that gives a heap of live bytes a headroom of
// max(live/4, minHeadroom), within [minGCPercent, maxGCPercent].
func gcPercentFor(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	headroom := max(live/4, minHeadroom)
	return int(min(max(headroom*100/live, minGCPercent), maxGCPercent))
}

// GOGC is process-wide, and tests run several servers, each with a tuner:
// the first tuner to start saves the GOGC in force and the last to stop
// puts it back. mu also orders a tuning after a collection with its
// tuner's stop, so a stopped tuner never sets GOGC again.
var (
	mu     sync.Mutex
	active int
	saved  int
)

// Start sets GOGC to gcPercentFor(live heap) now and after every collection
// until ctx ends; then it restores the GOGC in force before it started and
// closes the returned channel. An explicit GOGC in the environment wins:
// then it does nothing (and the channel is closed). GOMEMLIMIT, when set,
// still caps the heap either way.
func Start(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if _, set := os.LookupEnv("GOGC"); set {
		close(done)
		return done
	}
	t := &tuner{sample: []metrics.Sample{{Name: liveHeapGauge}}}
	mu.Lock()
	if active == 0 {
		saved = currentGCPercent()
	}
	active++
	t.tune()
	mu.Unlock()
	// A finalizer runs after the collection that found its object
	// unreachable; re-arming it on a fresh object makes it run once per
	// collection, for as long as the tuner is on.
	runtime.SetFinalizer(&sentinel{t: t}, (*sentinel).collected)
	go func() {
		defer close(done)
		<-ctx.Done()
		mu.Lock()
		defer mu.Unlock()
		t.stopped = true
		if active--; active == 0 {
			debug.SetGCPercent(saved)
		}
	}()
	return done
}

// currentGCPercent reads GOGC without setting it (debug.SetGCPercent
// returns the old value only by replacing it).
func currentGCPercent() int {
	s := []metrics.Sample{{Name: gogcGauge}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100 // Go's default; the runtime always has the gauge
	}
	return int(s[0].Value.Uint64())
}

type tuner struct {
	sample []metrics.Sample
	// stopped is guarded by mu.
	stopped bool
}

// tune sets GOGC for the live heap; mu must be held.
func (t *tuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	// Set every time, not only on a change: another tuner in the process
	// (tests run several servers) may have set it for its own heap reading.
	debug.SetGCPercent(gcPercentFor(t.sample[0].Value.Uint64()))
}

type sentinel struct{ t *tuner }

func (s *sentinel) collected() {
	mu.Lock()
	defer mu.Unlock()
	if s.t.stopped {
		return
	}
	s.t.tune()
	runtime.SetFinalizer(&sentinel{t: s.t}, (*sentinel).collected)
}
