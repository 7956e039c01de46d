package gctune

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{256 << 10, maxGCPercent}, // a tiny heap: 400%, not 1600%
		{2 << 20, 200},            // 4 MiB of headroom
		{4 << 20, 100},            // Go's default
		{8 << 20, 50},             // still 4 MiB
		{16 << 20, minGCPercent},  // from here on, a quarter of the live heap
		{1 << 30, minGCPercent},
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

func TestStartLeavesAnExplicitGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	before := debug.SetGCPercent(1234)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	select {
	case <-Start(ctx):
	case <-time.After(5 * time.Second):
		t.Fatal("the tuner took over although GOGC is set")
	}
	if got := currentGCPercent(); got != 1234 {
		t.Fatalf("GOGC changed to %d", got)
	}
}

// The tuner sets GOGC at once and again after a collection, and puts back
// the GOGC it found when it stops; with two tuners (tests run several
// servers), the one that stops last does.
func TestStartTunesAndRestores(t *testing.T) {
	t.Setenv("GOGC", "")
	_ = os.Unsetenv("GOGC") // t.Setenv restores it afterwards
	const outside = 1234    // outside [minGCPercent, maxGCPercent]: no tuning gives it
	before := debug.SetGCPercent(outside)
	defer debug.SetGCPercent(before)

	tuned := func() bool { p := currentGCPercent(); return p >= minGCPercent && p <= maxGCPercent }
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	done1 := Start(ctx1)
	if !tuned() {
		t.Fatalf("GOGC %d after Start, want one in [%d, %d]", currentGCPercent(), minGCPercent, maxGCPercent)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done2 := Start(ctx2)

	// Someone else sets GOGC; the next collection's finalizer tunes again.
	debug.SetGCPercent(999)
	for deadline := time.Now().Add(10 * time.Second); !tuned(); {
		if time.Now().After(deadline) {
			t.Fatal("GOGC not tuned again after collections")
		}
		runtime.GC()
		runtime.Gosched()
	}

	cancel1()
	<-done1
	if !tuned() {
		t.Fatalf("GOGC %d while a tuner still runs", currentGCPercent())
	}
	cancel2()
	<-done2
	if got := currentGCPercent(); got != outside {
		t.Fatalf("GOGC %d after the last tuner stopped, want the %d it found", got, outside)
	}
	// A stopped tuner no longer tunes.
	runtime.GC()
	runtime.GC()
	if got := currentGCPercent(); got != outside {
		t.Fatalf("GOGC %d after collections with every tuner stopped", got)
	}
}
