// Package gctune sizes the garbage collector's headroom (GOGC) to the auth
// server's live heap, for as long as the server runs (--gc-tuning): a quarter
// of it while the first list of records loads, an eighth once serving, at
// least 4 MiB.
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
// little at any size: once serving, an eighth of the live heap, at least
// 4 MiB, keeps the heap near its live size (the resident memory is what
// every replica pays; with 100,000 keys that is about 4 MiB less than a
// quarter, for a collection's half a millisecond twice as often).
//
// While the first full list loads (until Serving), the headroom is a quarter
// of the live heap: the list allocates some 8 KiB per record that it drops
// at once, and a collection then also marks the list's bookkeeping, so an
// eighth would double the collections of the start-up for a peak that the
// list, not the headroom, sets.
const (
	minHeadroom   = 4 << 20
	loadingShare  = 4 // headroom = live heap / loadingShare while loading
	servingShare  = 8 // headroom = live heap / servingShare once serving
	maxGCPercent  = 400
	liveHeapGauge = "/gc/heap/live:bytes"
	gogcGauge     = "/gc/gogc:percent"
)

// gcPercentFor returns the GOGC that gives a heap of live bytes a headroom of
// max(live/share, minHeadroom), within [100/share, maxGCPercent].
func gcPercentFor(live, share uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	headroom := max(live/share, minHeadroom)
	return int(min(max(headroom*100/live, 100/share), maxGCPercent))
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
// closes the returned channel. The headroom is the loading one until serving
// is closed (nil: never), the serving one from then on. An explicit GOGC in
// the environment wins: then it does nothing (and the channel is closed).
// GOMEMLIMIT, when set, still caps the heap either way.
func Start(ctx context.Context, serving <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	if _, set := os.LookupEnv("GOGC"); set {
		close(done)
		return done
	}
	t := &tuner{sample: []metrics.Sample{{Name: liveHeapGauge}}, share: loadingShare}
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
		select {
		case <-ctx.Done():
		case <-serving:
			mu.Lock()
			if !t.stopped {
				t.share = servingShare
				t.tune()
			}
			mu.Unlock()
			<-ctx.Done()
		}
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
	// share and stopped are guarded by mu.
	share   uint64
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
	debug.SetGCPercent(gcPercentFor(t.sample[0].Value.Uint64(), t.share))
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
