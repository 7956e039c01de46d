package webhookserver

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// The garbage collector's headroom: how far the heap may grow past the live
// heap before the next collection. Go's default (GOGC=100) makes it the live
// heap itself, which is too little for a small index (a collection every few
// thousand requests, each marking client-go's type registry) and too much for
// a large one (100,000 keys would double a ~35 MiB heap). The key table holds
// no pointers, so collecting more often costs little when the index is large.
const (
	minHeadroom   = 16 << 20
	minGCPercent  = 50
	maxGCPercent  = 400
	liveHeapGauge = "/gc/heap/live:bytes"
)

// gcPercentFor returns the GOGC that gives a heap of live bytes a headroom of
// max(live/2, minHeadroom), within [minGCPercent, maxGCPercent].
func gcPercentFor(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	headroom := max(live/2, minHeadroom)
	return int(min(max(headroom*100/live, minGCPercent), maxGCPercent))
}

// tuneGC sets GOGC to gcPercentFor(live heap) now and after every
// collection, until ctx ends (then it restores Go's default). An explicit
// GOGC in the environment wins: then it does nothing. GOMEMLIMIT, when set,
// still caps the heap either way.
func tuneGC(ctx context.Context) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	t := &gcTuner{sample: []metrics.Sample{{Name: liveHeapGauge}}}
	t.tune()
	// A finalizer runs after the collection that found its object
	// unreachable; re-arming it on a fresh object makes it run once per
	// collection, for as long as the tuner is on.
	runtime.SetFinalizer(&gcSentinel{t: t}, (*gcSentinel).collected)
	<-ctx.Done()
	t.stopped.Store(true)
	debug.SetGCPercent(100)
}

type gcTuner struct {
	sample  []metrics.Sample
	stopped atomic.Bool
}

func (t *gcTuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	// Set every time, not only on a change: another tuner in the process
	// (tests run several servers) may have reset it.
	debug.SetGCPercent(gcPercentFor(t.sample[0].Value.Uint64()))
}

type gcSentinel struct{ t *gcTuner }

func (s *gcSentinel) collected() {
	if s.t.stopped.Load() {
		return
	}
	s.t.tune()
	runtime.SetFinalizer(&gcSentinel{t: s.t}, (*gcSentinel).collected)
}
