package webhookserver

import (
	"context"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent},  // a tiny heap: 400%, not 1600%
		{8 << 20, 200},           // 16 MiB of headroom
		{16 << 20, 100},          // Go's default
		{24 << 20, 66},           // still 16 MiB
		{32 << 20, minGCPercent}, // from here on, half the live heap
		{1 << 30, minGCPercent},
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

func TestTuneGCLeavesAnExplicitGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	done := make(chan struct{})
	go func() { tuneGC(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("tuneGC took over although GOGC is set")
	}
}
