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
		live, share uint64
		want        int
	}{
		{0, servingShare, maxGCPercent},
		{256 << 10, servingShare, maxGCPercent}, // a tiny heap: 400%, not 1600%
		{2 << 20, servingShare, 200},            // 4 MiB of headroom
		{4 << 20, servingShare, 100},            // Go's default
		{8 << 20, servingShare, 50},             // still 4 MiB
		{32 << 20, servingShare, 12},            // from here on, an eighth of the live heap
		{1 << 30, servingShare, 12},
		{8 << 20, loadingShare, 50},  // loading: the same 4 MiB at least,
		{16 << 20, loadingShare, 25}, // then a quarter
		{1 << 30, loadingShare, 25},
	} {
		if got := gcPercentFor(tc.live, tc.share); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB, 1/%d) = %d, want %d", tc.live>>20, tc.share, got, tc.want)
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
	case <-Start(ctx, nil):
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
	const outside = 1234    // outside [100/servingShare, maxGCPercent]: no tuning gives it
	before := debug.SetGCPercent(outside)
	defer debug.SetGCPercent(before)

	tuned := func() bool { p := currentGCPercent(); return p >= 100/servingShare && p <= maxGCPercent }
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	done1 := Start(ctx1, nil)
	if !tuned() {
		t.Fatalf("GOGC %d after Start, want one in [%d, %d]", currentGCPercent(), 100/servingShare, maxGCPercent)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done2 := Start(ctx2, nil)

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

// Until serving is closed the headroom is the loading one (a quarter of the
// live heap), then the serving one (an eighth).
func TestStartServingTightensTheHeadroom(t *testing.T) {
	t.Setenv("GOGC", "")
	_ = os.Unsetenv("GOGC")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	// 64 MiB live, without pointers: both headrooms are a share of it.
	ballast := make([]byte, 64<<20)
	defer runtime.KeepAlive(ballast)
	runtime.GC()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serving := make(chan struct{})
	done := Start(ctx, serving)
	runtime.GC()
	if got, want := currentGCPercent(), 100/loadingShare; got != want {
		t.Fatalf("GOGC %d while loading, want %d", got, want)
	}
	close(serving)
	for deadline := time.Now().Add(10 * time.Second); currentGCPercent() != 100/servingShare; {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d once serving, want %d", currentGCPercent(), 100/servingShare)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if got := currentGCPercent(); got != 100 {
		t.Fatalf("GOGC %d after the tuner stopped, want the 100 it found", got)
	}
}
