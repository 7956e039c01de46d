package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/meterr/meterr-operator/internal/quota"
)

// t0 is half past an hour, so the window resets in 1800 seconds.
var t0 = time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)

func TestMemoryLimiter(t *testing.T) {
	ctx := context.Background()
	l := NewMemory()
	now := t0
	reset := time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		rem, r, ok := l.Take(ctx, quota.Named("a"), quota.PerHour(3), now)
		if !ok || rem != int64(2-i) || !r.Equal(reset) {
			t.Fatalf("take %d: %d %v %v", i, rem, r, ok)
		}
	}
	if rem, _, ok := l.Take(ctx, quota.Named("a"), quota.PerHour(3), now); ok || rem != 0 {
		t.Fatalf("over the limit: %d %v", rem, ok)
	}
	if rem, r := l.Peek(ctx, quota.Named("a"), quota.PerHour(3), now); rem != 0 || !r.Equal(reset) {
		t.Fatalf("peek: %d %v", rem, r)
	}
	// Other ids are independent.
	if rem, _, ok := l.Take(ctx, quota.Named("b"), quota.PerHour(3), now); !ok || rem != 2 {
		t.Fatalf("b: %d %v", rem, ok)
	}
	// A raised limit applies to the same window at once.
	if rem, _, ok := l.Take(ctx, quota.Named("a"), quota.PerHour(5), now); !ok || rem != 1 {
		t.Fatalf("raised limit: %d %v", rem, ok)
	}
	// The last instant of the hour is still the same window; the next hour
	// is a new one, reset lazily.
	if _, _, ok := l.Take(ctx, quota.Named("a"), quota.PerHour(3), reset.Add(-time.Nanosecond)); ok {
		t.Fatal("same window let a request through")
	}
	if rem, r := l.Peek(ctx, quota.Named("a"), quota.PerHour(3), reset); rem != 3 || !r.Equal(reset.Add(time.Hour)) {
		t.Fatalf("peek in the next window: %d %v", rem, r)
	}
	if rem, _, ok := l.Take(ctx, quota.Named("a"), quota.PerHour(3), reset); !ok || rem != 2 {
		t.Fatalf("next window: %d %v", rem, ok)
	}
	// Windows follow UTC, whatever the time's location.
	tokyo := time.FixedZone("x", 5*3600+1800) // a half-hour offset
	if _, r, _ := l.Take(ctx, quota.Named("c"), quota.PerHour(3), t0.In(tokyo)); !r.Equal(reset) || r.Location() != time.UTC {
		t.Fatalf("reset in a half-hour zone: %v", r)
	}
	l.Forget("a")
	if rem, _ := l.Peek(ctx, quota.Named("a"), quota.PerHour(3), reset); rem != 3 {
		t.Fatalf("after Forget: %d", rem)
	}
}

func TestMemoryLimiterConcurrent(t *testing.T) {
	ctx := context.Background()
	l := NewMemory()
	const limit, workers, each = 500, 8, 100
	var mu sync.Mutex
	granted := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			n := 0
			for range each {
				if _, _, ok := l.Take(ctx, quota.Named("k"), quota.PerHour(limit), t0); ok {
					n++
				}
				l.Peek(ctx, quota.Named("k"), quota.PerHour(limit), t0)
				l.Take(ctx, quota.Named("other"), quota.PerHour(limit), t0)
			}
			mu.Lock()
			granted += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if granted != limit {
		t.Fatalf("granted %d of %d attempts, want exactly %d", granted, workers*each, limit)
	}
}

// The limiter keeps nothing of an id's bytes: the index hands out ids that
// point into its text arena, and a counter must neither change with those
// bytes nor keep them alive. A forgotten counter starts again from zero.
func TestMemoryLimiterKeepsNoIDBytes(t *testing.T) {
	ctx := context.Background()
	l := NewMemory()
	b := []byte("uid-1")
	id := unsafe.String(&b[0], len(b))
	if rem, _, ok := l.Take(ctx, quota.Named(id), quota.PerHour(10), t0); !ok || rem != 9 {
		t.Fatalf("first take: %d %v", rem, ok)
	}
	b[4] = '2' // the caller's bytes change (the arena never does this; the copy must not care)
	if rem, _, ok := l.Take(ctx, quota.Named("uid-1"), quota.PerHour(10), t0); !ok || rem != 8 {
		t.Fatalf("uid-1 after its caller's bytes changed: %d %v", rem, ok)
	}
	if rem, _ := l.Peek(ctx, quota.Named("uid-2"), quota.PerHour(10), t0); rem != 10 {
		t.Fatalf("uid-2 was never counted, remaining %d", rem)
	}
	l.Forget("uid-1")
	if rem, _ := l.Peek(ctx, quota.Named("uid-1"), quota.PerHour(10), t0); rem != 10 {
		t.Fatalf("forgotten uid-1: remaining %d", rem)
	}
	if rem, _, ok := l.Take(ctx, quota.Named("uid-3"), quota.PerHour(10), t0); !ok || rem != 9 {
		t.Fatalf("uid-3 in a reused place: %d %v", rem, ok)
	}
}
