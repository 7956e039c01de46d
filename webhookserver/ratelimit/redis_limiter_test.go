package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/test/redistest"
)

func startRedis(t *testing.T) *redistest.Server { return redistest.Start(t) }

func newRedisLimiter(t *testing.T, url, mode string) *Redis {
	t.Helper()
	// A short probe interval only makes the tests quicker: they wait for
	// Healthy, never for a time.
	// A generous timeout: the cores are shared, and an outage in these tests
	// is a refused connection, answered at once.
	l, err := NewRedis(RedisOptions{URL: url, Timeout: time.Second, FailureMode: mode, Log: logr.Discard(),
		ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// waitHealthy polls until every limiter's probe has seen Redis answer
// again; the deadline is generous, for a busy machine, and is no assertion
// on how long recovery takes.
func waitHealthy(t *testing.T, ls ...*Redis) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := 0
		for _, l := range ls {
			if l.Healthy() {
				n++
			}
		}
		if n == len(ls) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d limiters healthy after a minute", n, len(ls))
		}
	}
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
		rem, reset, ok := l.Take(ctx, quota.Named(id), quota.PerHour(limit), t0)
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
	if rem, reset := b.Peek(ctx, quota.Named(id), quota.PerHour(limit), t0); rem != 0 || reset.IsZero() {
		t.Fatalf("peek: %d %v", rem, reset)
	}
	_, reset := quota.Hourly.Index(t0)
	if rem, _, ok := a.Take(ctx, quota.Named(id), quota.PerHour(limit), reset); !ok || rem != limit-1 {
		t.Fatalf("next hour: %d %v", rem, ok)
	}
	a.now = func() time.Time { return reset } // Forget drops the windows of the limiter's clock
	a.Forget(id)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rem, _ := b.Peek(ctx, quota.Named(id), quota.PerHour(limit), reset); rem == limit {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after Forget: %d", rem)
		}
	}
	// A client that hangs up mid-request is no Redis outage.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, ok := a.Take(gone, quota.Named(id), quota.PerHour(limit), reset); !ok {
		t.Fatal("a cancelled request was refused")
	}
	if !a.Healthy() {
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
	ls := []*Redis{newRedisLimiter(t, r.URL(), FailOpen), newRedisLimiter(t, r.URL(), FailOpen)}
	const limit, workers, each = 50, 8, 20
	results := make(chan bool, workers*each)
	for w := range workers {
		go func() {
			for range each {
				_, _, ok := ls[w%2].Take(context.Background(), quota.Named("concurrent"), quota.PerHour(limit), t0)
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
// a zero reset; requests do not try Redis, the background probe does, and
// once it has seen Redis answer the limiter counts there again.
func TestRedisLimiterFailureModes(t *testing.T) {
	r := startRedis(t)
	open, closed := newRedisLimiter(t, r.URL(), FailOpen), newRedisLimiter(t, r.URL(), FailClosed)
	ctx := context.Background()
	if _, _, ok := closed.Take(ctx, quota.Named("k"), quota.PerHour(2), t0); !ok {
		t.Fatal("redis up: refused")
	}
	r.Stop()

	for i := range 3 {
		_, reset, ok := open.Take(ctx, quota.Named("k"), quota.PerHour(2), t0)
		if ok != (i < 2) || reset.IsZero() {
			t.Fatalf("fail open, take %d: ok %v reset %v (want the in-memory limit of 2)", i, ok, reset)
		}
	}
	if rem, reset, ok := closed.Take(ctx, quota.Named("k"), quota.PerHour(2), t0); ok || rem != 0 || !reset.IsZero() {
		t.Fatalf("fail closed: %d %v %v", rem, reset, ok)
	}
	if _, reset := closed.Peek(ctx, quota.Named("k"), quota.PerHour(2), t0); !reset.IsZero() {
		t.Fatal("fail closed peek reports a count")
	}
	if testutil.ToFloat64(open.errors) < 1 || testutil.ToFloat64(closed.errors) < 1 {
		t.Fatal("errors not counted")
	}
	if open.Healthy() || closed.Healthy() || testutil.ToFloat64(closed.healthy) != 0 {
		t.Fatal("a limiter that saw Redis fail reports healthy")
	}
	// While Redis is down requests do not even try it: no more errors.
	before := testutil.ToFloat64(closed.errors)
	closed.Take(ctx, quota.Named("k"), quota.PerHour(2), t0)
	if testutil.ToFloat64(closed.errors) != before {
		t.Fatal("a request tried redis while it was down")
	}

	r.Restart() // without persistence: it starts from zero
	waitHealthy(t, open, closed)
	if testutil.ToFloat64(closed.healthy) != 1 {
		t.Fatal("meterr_auth_limiter_redis_up is not 1 after recovery")
	}
	if rem, reset, ok := closed.Take(ctx, quota.Named("k"), quota.PerHour(2), t0); !ok || rem != 1 || reset.IsZero() {
		t.Fatalf("redis back: %d %v %v", rem, reset, ok)
	}
	// Fail open counted 2 in memory; Redis starts from 0 and is used again.
	if rem, _, ok := open.Take(ctx, quota.Named("k"), quota.PerHour(2), t0); !ok || rem != 0 {
		t.Fatalf("redis back, fail open: %d %v (want the shared count)", rem, ok)
	}
}

// Recovery is found by the background probe, not by a request: three
// replicas share one Redis with a limit of N; Redis is killed, each replica
// counts some requests in memory, Redis comes back empty on the same port.
// Once every replica reports healthy, the very next requests are all
// counted in Redis: exactly N are accepted across the three, in the same
// window as the requests counted in memory during the outage (a request
// counted in memory by a replica that had not noticed the recovery would be
// accepted on top, N+1).
func TestRedisLimiterRecoveryIsProbedInBackground(t *testing.T) {
	r := startRedis(t)
	ls := []*Redis{newRedisLimiter(t, r.URL(), FailOpen), newRedisLimiter(t, r.URL(), FailOpen),
		newRedisLimiter(t, r.URL(), FailOpen)}
	ctx := context.Background()
	const limit = 15
	id := fmt.Sprintf("uid-recovery-%d", time.Now().UnixNano())
	for _, l := range ls {
		if _, _, ok := l.Take(ctx, quota.Named(id), quota.PerHour(limit), t0); !ok {
			t.Fatal("redis up: refused")
		}
	}
	r.Stop()
	for i, l := range ls {
		// limit-1 in memory each (the first fails over to memory too).
		for range limit - 1 {
			if _, _, ok := l.Take(ctx, quota.Named(id), quota.PerHour(limit), t0); !ok {
				t.Fatalf("replica %d, fail open: refused within the in-memory limit", i)
			}
		}
		if l.Healthy() {
			t.Fatalf("replica %d reports healthy while redis is down", i)
		}
	}
	r.Restart()
	waitHealthy(t, ls...)
	admitted := 0
	for i := range 3 * limit {
		if _, _, ok := ls[i%3].Take(ctx, quota.Named(id), quota.PerHour(limit), t0); ok {
			admitted++
		}
	}
	if admitted != limit {
		t.Fatalf("after recovery the replicas admitted %d, want exactly %d", admitted, limit)
	}
	hour, _ := quota.Hourly.Index(t0)
	if got := r.MustDo("GET", windowKey(id, quota.Hourly, hour)).Str; got != strconv.Itoa(limit) {
		t.Fatalf("redis holds %q for the window, want %d", got, limit)
	}
}

func TestNewRedisLimiterRefusesBadInput(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewRedis(RedisOptions{URL: "redis://:hunter2@host:notaport", Registerer: reg}); err == nil ||
		strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("bad URL: %v", err)
	}
	if _, err := NewRedis(RedisOptions{URL: "redis://127.0.0.1:1", FailureMode: "deny"}); err == nil {
		t.Fatal("bad failure mode accepted")
	}
}

// The limiter's log lines never hold the password of the URL: not when
// Redis refuses it, not when Redis is down, not when it comes back.
func TestRedisLimiterNeverLogsThePassword(t *testing.T) {
	r := startRedis(t)
	var mu sync.Mutex
	var logs strings.Builder
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(&logs, prefix, args)
	}, funcr.Options{Verbosity: 4})
	r.MustDo("CONFIG", "SET", "requirepass", "another") // AUTH fails
	url := "redis://:hunter2@" + r.Addr + "/0"
	l, err := NewRedis(RedisOptions{URL: url, Timeout: time.Second, FailureMode: FailClosed, Log: log,
		ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	if _, reset, ok := l.Take(context.Background(), quota.Named("k"), quota.PerHour(5), t0); ok || !reset.IsZero() {
		t.Fatal("a refused password did not fail closed")
	}
	r.Stop()
	l.Take(context.Background(), quota.Named("k"), quota.PerHour(5), t0)
	r.Restart() // without a password
	waitHealthy(t, l)
	l.Take(context.Background(), quota.Named("k"), quota.PerHour(5), t0)
	l.Forget("k")
	_ = l.Close()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "redis unreachable") {
		t.Fatalf("the outage was not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("a log line holds the password:\n%s", logs.String())
	}
}
