package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/test/redistest"
)

// takeRoundRobin makes n requests for id, in turn on each limiter, and
// returns how many were admitted; a refusal must be an over-limit one (with
// a reset), not a failure to reach Redis.
func takeRoundRobin(t *testing.T, ls []*Redis, id string, limit int64, n int) int {
	t.Helper()
	return takeRoundRobinAt(t, ls, id, limit, n, t0)
}

func takeRoundRobinAt(t *testing.T, ls []*Redis, id string, limit int64, n int, now time.Time) int {
	t.Helper()
	admitted := 0
	for i := range n {
		_, reset, ok := ls[i%len(ls)].Take(context.Background(), quota.Named(id), quota.PerHour(limit), now)
		if ok {
			admitted++
		} else if reset.IsZero() {
			t.Fatalf("request %d for %s: redis unreachable", i, id)
		}
	}
	return admitted
}

// A real three-master Redis Cluster: three replicas of the limiter admit
// exactly the limit of each key between them, concurrently, with the keys
// spread over every master; a key's two windows share its hash tag, so
// Forget deletes both in one command.
func TestRedisLimiterCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	ls := []*Redis{newRedisLimiter(t, c.URL(), FailClosed), newRedisLimiter(t, c.URL(), FailClosed),
		newRedisLimiter(t, c.URL(), FailClosed)}
	const limit, keys = 10, 30
	var admitted [keys]atomic.Int64
	var wg sync.WaitGroup
	for k := range keys {
		for _, l := range ls {
			wg.Go(func() {
				for range limit {
					_, reset, ok := l.Take(context.Background(), quota.Named("cluster-"+strconv.Itoa(k)), quota.PerHour(limit), t0)
					if ok {
						admitted[k].Add(1)
					} else if reset.IsZero() {
						t.Errorf("key %d: the cluster was unreachable", k)
					}
				}
			})
		}
	}
	wg.Wait()
	hour, _ := quota.Hourly.Index(t0)
	for k := range keys {
		if got := admitted[k].Load(); got != limit {
			t.Errorf("key %d: three replicas admitted %d of %d requests, want exactly %d", k, got, 3*limit, limit)
		}
		if got := c.Get(windowKey("cluster-"+strconv.Itoa(k), quota.Hourly, hour)).Str; got != strconv.Itoa(limit) {
			t.Errorf("key %d: the cluster holds %q, want %d", k, got, limit)
		}
	}
	for i, n := range c.Keys() {
		if n == 0 {
			t.Errorf("node %d holds no window: the test does not span the cluster's shards", i)
		}
	}

	// Forget: one DEL of the current and the previous window (a CROSSSLOT
	// error, were they on different slots, would count as a Redis error).
	ls[0].Take(context.Background(), quota.Named("cluster-0"), quota.PerHour(limit), t0.Add(-time.Hour))
	ls[0].now = func() time.Time { return t0 }
	ls[0].Forget("cluster-0")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rem, _ := ls[1].Peek(context.Background(), quota.Named("cluster-0"), quota.PerHour(limit), t0)
		prev, _ := ls[1].Peek(context.Background(), quota.Named("cluster-0"), quota.PerHour(limit), t0.Add(-time.Hour))
		if rem == limit && prev == limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Forget: remaining %d and %d in the two windows", rem, prev)
		}
	}
	for i, l := range ls {
		if got := testutil.ToFloat64(l.errors); got != 0 || !l.Healthy() {
			t.Errorf("replica %d: %v redis errors, healthy %v", i, got, l.Healthy())
		}
	}

	// One master down: the checks of its keys fail (closed: refused
	// without counters), the limiter stops trying Redis, and once the node
	// is back and the cluster ok the probe finds it and counts are exact
	// across the shards again.
	node := c.NodeOf(windowKey("cluster-0", quota.Hourly, hour))
	node.Stop()
	for i, l := range ls {
		if _, reset, ok := l.Take(context.Background(), quota.Named("cluster-0"), quota.PerHour(limit), t0.Add(time.Hour)); ok || !reset.IsZero() {
			t.Fatalf("replica %d, a master down: ok %v reset %v", i, ok, reset)
		}
		if l.Healthy() {
			t.Fatalf("replica %d reports healthy with a master down", i)
		}
	}
	node.Restart()
	c.WaitOK()
	waitHealthy(t, ls...)
	later, _ := quota.Hourly.Index(t0.Add(time.Hour))
	for k := range keys {
		id := "cluster-" + strconv.Itoa(k)
		if got := takeRoundRobinAt(t, ls, id, limit, 3*limit, t0.Add(time.Hour)); got != limit {
			t.Errorf("key %d after the outage: admitted %d, want exactly %d", k, got, limit)
		}
		if got := c.Get(windowKey(id, quota.Hourly, later)).Str; got != strconv.Itoa(limit) {
			t.Errorf("key %d after the outage: the cluster holds %q, want %d", k, got, limit)
		}
	}
}

// A real Sentinel pair (master, replica, two sentinels, quorum 1) and the
// master killed while four replicas of the limiter (two failing open, two
// closed) are under load: nothing crashes, answers keep coming throughout,
// as the failure mode says while there is no master, and once the sentinels
// have promoted the replica every limiter reports healthy and the counts are
// shared, exactly, in the new master.
func TestRedisLimiterSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	open := []*Redis{newRedisLimiter(t, s.URL(), FailOpen), newRedisLimiter(t, s.URL(), FailOpen)}
	closed := []*Redis{newRedisLimiter(t, s.URL(), FailClosed), newRedisLimiter(t, s.URL(), FailClosed)}
	all := append(append([]*Redis{}, open...), closed...)
	const limit = 10
	hour, _ := quota.Hourly.Index(t0)

	if got := takeRoundRobin(t, all, "before", limit, 3*limit); got != limit {
		t.Fatalf("before the failover: admitted %d, want exactly %d", got, limit)
	}
	if got := s.Master.MustDo("GET", windowKey("before", quota.Hourly, hour)).Str; got != strconv.Itoa(limit) {
		t.Fatalf("the master holds %q, want %d", got, limit)
	}

	// Load: one loop per limiter on a key whose limit is never reached, so
	// every refusal is a failure to reach Redis.
	var answers, refused, wrong [4]atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, l := range all {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, reset, ok := l.Take(context.Background(), quota.Named(fmt.Sprintf("load-%d", i)), quota.PerHour(1<<40), t0)
				switch {
				case ok && !reset.IsZero():
				case !ok && reset.IsZero() && !l.failOpen:
					refused[i].Add(1)
				default:
					wrong[i].Add(1)
				}
				answers[i].Add(1)
				time.Sleep(time.Millisecond) // the cores are shared
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	waitAnswers := func(what string) {
		t.Helper()
		var from [4]int64
		for i := range all {
			from[i] = answers[i].Load()
		}
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			n := 0
			for i := range all {
				if answers[i].Load() >= from[i]+20 {
					n++
				}
			}
			if n == len(all) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d limiters stopped answering", what, len(all)-n, len(all))
			}
		}
	}
	waitAnswers("before the failover")
	newMaster := s.KillMaster()
	waitAnswers("after the failover")
	stop()
	wg.Wait()
	for i := range all {
		if wrong[i].Load() != 0 {
			t.Errorf("limiter %d (fail open %v): %d answers that do not follow the failure mode", i, all[i].failOpen, wrong[i].Load())
		}
		t.Logf("limiter %d (fail open %v): %d answers, %d refused as unavailable, %v redis errors",
			i, all[i].failOpen, answers[i].Load(), refused[i].Load(), testutil.ToFloat64(all[i].errors))
	}

	waitHealthy(t, all...)
	for _, pair := range [][]*Redis{open, closed} {
		id := fmt.Sprintf("after-%v", pair[0].failOpen)
		if got := takeRoundRobin(t, pair, id, limit, 3*limit); got != limit {
			t.Fatalf("after the failover (fail open %v): admitted %d, want exactly %d", pair[0].failOpen, got, limit)
		}
		if got := newMaster.MustDo("GET", windowKey(id, quota.Hourly, hour)).Str; got != strconv.Itoa(limit) {
			t.Fatalf("the new master holds %q for %s, want %d", got, id, limit)
		}
	}
}
