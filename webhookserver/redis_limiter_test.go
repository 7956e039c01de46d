package webhookserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meterr/meterr-operator/internal/redistest"
)

func startRedis(t *testing.T) *redistest.Server { return redistest.Start(t) }

func newRedisLimiter(t *testing.T, url, mode string) *RedisLimiter {
	t.Helper()
	l, err := NewRedisLimiter(RedisOptions{URL: url, Timeout: 200 * time.Millisecond, FailureMode: mode, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// Two replicas share one Redis: between them they admit exactly the limit,
// per window, and forgetting a key resets its count for both.
func TestRedisLimiterSharedAcrossReplicas(t *testing.T) {
	r := startRedis(t)
	a, b := newRedisLimiter(t, r.URL(), FailOpen), newRedisLimiter(t, r.URL(), FailOpen)
	ctx := context.Background()
	id := fmt.Sprintf("uid-%d", time.Now().UnixNano())
	const limit = 10
	admitted := 0
	for i := range 2 * limit {
		l := a
		if i%2 == 1 {
			l = b
		}
		rem, reset, ok := l.Take(ctx, id, limit, t0)
		if ok {
			admitted++
			if rem != int64(limit-admitted) {
				t.Fatalf("take %d: remaining %d, want %d", i, rem, limit-admitted)
			}
		} else if rem != 0 || reset.IsZero() {
			t.Fatalf("refused take %d: remaining %d, reset %v", i, rem, reset)
		}
	}
	if admitted != limit {
		t.Fatalf("two replicas admitted %d, want exactly %d", admitted, limit)
	}
	if rem, reset := b.Peek(ctx, id, limit, t0); rem != 0 || reset.IsZero() {
		t.Fatalf("peek: %d %v", rem, reset)
	}
	_, reset := windowOf(t0)
	if rem, _, ok := a.Take(ctx, id, limit, reset); !ok || rem != limit-1 {
		t.Fatalf("next hour: %d %v", rem, ok)
	}
	a.now = func() time.Time { return reset } // Forget drops the windows of the limiter's clock
	a.Forget(id)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rem, _ := b.Peek(ctx, id, limit, reset); rem == limit {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after Forget: %d", rem)
		}
	}
	// A client that hangs up mid-request is no Redis outage.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, ok := a.Take(gone, id, limit, reset); !ok {
		t.Fatal("a cancelled request was refused")
	}
	if !a.available() {
		t.Fatal("a cancelled request started a backoff")
	}
	// A watch winding down may still forget a key after Close.
	_ = b.Close()
	b.Forget(id)
	if got := testutil.ToFloat64(a.errors); got != 0 {
		t.Fatalf("%v errors", got)
	}
}

// Concurrent replicas never admit more than the limit between them.
func TestRedisLimiterConcurrent(t *testing.T) {
	r := startRedis(t)
	ls := []*RedisLimiter{newRedisLimiter(t, r.URL(), FailOpen), newRedisLimiter(t, r.URL(), FailOpen)}
	const limit, workers, each = 50, 8, 20
	results := make(chan bool, workers*each)
	for w := range workers {
		go func() {
			for range each {
				_, _, ok := ls[w%2].Take(context.Background(), "concurrent", limit, t0)
				results <- ok
			}
		}()
	}
	admitted := 0
	for range workers * each {
		if <-results {
			admitted++
		}
	}
	if admitted != limit {
		t.Fatalf("admitted %d of %d requests, want exactly %d", admitted, workers*each, limit)
	}
}

// While Redis is down: fail open counts in memory, fail closed refuses with
// a zero reset; a second later Redis is tried again and used once it answers.
func TestRedisLimiterFailureModes(t *testing.T) {
	r := startRedis(t)
	open, closed := newRedisLimiter(t, r.URL(), FailOpen), newRedisLimiter(t, r.URL(), FailClosed)
	now := time.Now()
	for _, l := range []*RedisLimiter{open, closed} {
		l.mono = func() time.Time { return now }
	}
	ctx := context.Background()
	if _, _, ok := closed.Take(ctx, "k", 2, t0); !ok {
		t.Fatal("redis up: refused")
	}
	r.Stop()

	for i := range 3 {
		_, reset, ok := open.Take(ctx, "k", 2, t0)
		if ok != (i < 2) || reset.IsZero() {
			t.Fatalf("fail open, take %d: ok %v reset %v (want the in-memory limit of 2)", i, ok, reset)
		}
	}
	if rem, reset, ok := closed.Take(ctx, "k", 2, t0); ok || rem != 0 || !reset.IsZero() {
		t.Fatalf("fail closed: %d %v %v", rem, reset, ok)
	}
	if _, reset := closed.Peek(ctx, "k", 2, t0); !reset.IsZero() {
		t.Fatal("fail closed peek reports a count")
	}
	if testutil.ToFloat64(open.errors) < 1 || testutil.ToFloat64(closed.errors) < 1 {
		t.Fatal("errors not counted")
	}
	// Within the backoff Redis is not even tried: no more errors.
	before := testutil.ToFloat64(closed.errors)
	closed.Take(ctx, "k", 2, t0)
	if testutil.ToFloat64(closed.errors) != before {
		t.Fatal("redis tried again within the backoff")
	}

	r.Restart() // without persistence: it starts from zero
	now = now.Add(redisBackoff)
	if rem, reset, ok := closed.Take(ctx, "k", 2, t0); !ok || rem != 1 || reset.IsZero() {
		t.Fatalf("redis back: %d %v %v", rem, reset, ok)
	}
}

// The answers a client sees while Redis is down and the limiter fails closed:
// 429 rate_limit_exceeded with Retry-After and no counters, never 5xx; an
// unlimited key does not depend on Redis.
func TestServerRedisFailClosed(t *testing.T) {
	r := startRedis(t)
	rl := newRedisLimiter(t, r.URL(), FailClosed)
	f := newFixture(t, func(c *ServerConfig) { c.Limiter = rl })
	limited := f.add("limited", standard())
	pol := standard()
	pol.RequestsPerHour = 0
	unlimited := f.add("unlimited", pol)
	if w := f.do(req{key: limited}); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "999" {
		t.Fatalf("redis up: %d %v", w.Code, w.Header())
	}
	r.Stop()
	w := f.do(req{key: limited})
	checkCommon(t, w, limited)
	if w.Code != http.StatusTooManyRequests || errorCode(t, w) != "rate_limit_exceeded" || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("redis down, fail closed: %d %v", w.Code, w.Header())
	}
	if w.Header().Get("X-RateLimit-Limit") != "1000" || w.Header().Get("RateLimit-Policy") == "" ||
		w.Header().Get("X-RateLimit-Remaining") != "" || w.Header().Get("RateLimit") != "" {
		t.Fatalf("want the limit and the policy, no counters (unknown): %v", w.Header())
	}
	if w := f.do(req{key: unlimited}); w.Code != http.StatusOK {
		t.Fatalf("unlimited key: %d", w.Code)
	}
}

func TestNewRedisLimiterRefusesBadInput(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewRedisLimiter(RedisOptions{URL: "redis://:hunter2@host:notaport", Registerer: reg}); err == nil ||
		strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("bad URL: %v", err)
	}
	if _, err := NewRedisLimiter(RedisOptions{URL: "redis://127.0.0.1:1", FailureMode: "deny"}); err == nil {
		t.Fatal("bad failure mode accepted")
	}
}
