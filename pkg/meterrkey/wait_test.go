package meterrkey

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

const waiters = 50

// openOn is open on a fake clock.
func openOn(t *testing.T, clk *clocktesting.FakeClock, opts Options) *Source {
	t.Helper()
	s, err := newSource(opts, clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// burst sends n GETs at once and returns a channel that yields their
// statuses when all are done.
func burst(t *testing.T, c *http.Client, url string, n int) <-chan []int {
	out := make(chan []int, 1)
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := c.Get(url)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			readAll(t, resp)
			statuses[i] = resp.StatusCode
		})
	}
	go func() { wg.Wait(); out <- statuses }()
	return out
}

// await returns what ch yields, failing after a real-time bound: nothing
// here should take long, the clock is fake.
func await(t *testing.T, what string, ch <-chan []int) []int {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

func count(statuses []int, code int) int {
	n := 0
	for _, s := range statuses {
		if s == code {
			n++
		}
	}
	return n
}

// waitUntil waits until the fake clock has n timers: every request in the
// shared wait holds one, the wait itself two (its end, its next look at the
// file).
func waitUntil(t *testing.T, clk *clocktesting.FakeClock, n int) {
	t.Helper()
	eventually(t, "the requests to wait", func() bool { return clk.Waiters() == n })
}

// Fifty requests refused with a key the file still holds wait together: the
// refusals read nothing (the file did not change), the wait reads the file
// once when it changes, and all fifty go again with the new key.
func TestWaitersShareOneReadPerChange(t *testing.T) {
	v := newVolume(t)
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	v.put(k1)
	clk := clocktesting.NewFakeClock(time.Now())
	s := openOn(t, clk, Options{Path: v.path(), NoWatch: true, Resync: -1})
	srv := newAuthServer(t)
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: time.Hour})

	for round, next := range []string{k2, k3} {
		old := mustKey(t, s)
		srv.set([]string{next}, []string{old}) // rotated, overlap 0s; the volume lags
		before := s.reads.Load()
		done := burst(t, c, srv.URL, waiters)
		waitUntil(t, clk, waiters+2)
		if n := s.reads.Load() - before; n != 0 {
			t.Fatalf("round %d: %d refusals of the key the file still holds read it %d times, want 0", round, waiters, n)
		}
		clk.Step(waitPoll) // nothing changed yet: the wait looks, and reads nothing
		waitUntil(t, clk, waiters+2)
		if n := s.reads.Load() - before; n != 0 {
			t.Fatalf("round %d: the wait read an unchanged file %d times", round, n)
		}
		v.put(next)
		clk.Step(waitPoll)
		statuses := await(t, "the new key", done)
		if count(statuses, http.StatusOK) != waiters {
			t.Fatalf("round %d: statuses %v, want %d × 200", round, statuses, waiters)
		}
		if n := s.reads.Load() - before; n != 1 {
			t.Fatalf("round %d: %d waiting requests cost %d reads of the file for one change, want 1", round, waiters, n)
		}
		waitUntil(t, clk, 0) // the wait's own timers go as it ends
	}
}

// The same through the watcher: the kubelet's swap is several events in
// the directory, and costs one read; the clock never moves, so the watch,
// not a poll, woke the requests.
func TestWaitersWokenByTheWatcherReadOnce(t *testing.T) {
	v := newVolume(t)
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	v.put(k1)
	clk := clocktesting.NewFakeClock(time.Now())
	s := openOn(t, clk, Options{Path: v.path(), Resync: -1})
	srv := newAuthServer(t)
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: time.Hour})

	srv.set([]string{k2}, []string{k1})
	before := s.reads.Load()
	done := burst(t, c, srv.URL, waiters)
	waitUntil(t, clk, waiters+2)
	v.put(k2)
	if statuses := await(t, "the new key", done); count(statuses, http.StatusOK) != waiters {
		t.Fatalf("statuses %v, want %d × 200", statuses, waiters)
	}
	// Every event of that swap comes before those of the next one, so
	// once the next key is in, they have all been handled.
	v.put(k3)
	eventually(t, "the next key", func() bool { return mustKey(t, s) == k3 })
	if n := s.reads.Load() - before; n != 2 {
		t.Fatalf("two swaps, %d waiting requests: %d reads of the file, want 2", waiters, n)
	}
}

// A key refused for good (expired with no successor, or disabled) holds
// requests once, not each of them: when the shared wait gives up, the
// requests refused with the same key afterwards return at once, reading
// nothing, until the key changes. invalid_api_key never waits.
func TestNoWaitWithoutAChange(t *testing.T) {
	v := newVolume(t)
	k1, k2 := newKey(t), newKey(t)
	v.put(k1)
	clk := clocktesting.NewFakeClock(time.Now())
	s := openOn(t, clk, Options{Path: v.path(), NoWatch: true, Resync: -1})
	srv := newAuthServer(t)
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: time.Minute})
	before := s.reads.Load()

	// Disabled (or deleted): invalid_api_key; nothing is coming, nothing waits.
	srv.set(nil, nil)
	if statuses := await(t, "the refusals of a disabled key", burst(t, c, srv.URL, waiters)); count(statuses, http.StatusUnauthorized) != waiters {
		t.Fatalf("statuses %v", statuses)
	}

	// Expired with no new key: one shared wait, which gives up after
	// WaitForNewKey for every request in it at once.
	srv.set(nil, []string{k1})
	done := burst(t, c, srv.URL, waiters)
	waitUntil(t, clk, waiters+2)
	clk.Step(time.Minute)
	if statuses := await(t, "the wait to give up", done); count(statuses, http.StatusUnauthorized) != waiters {
		t.Fatalf("statuses %v", statuses)
	}
	// Then: at once (the clock does not move; a waiting request would
	// never return).
	if statuses := await(t, "the refusals after the wait", burst(t, c, srv.URL, waiters)); count(statuses, http.StatusUnauthorized) != waiters {
		t.Fatalf("statuses %v", statuses)
	}
	if n := s.reads.Load() - before; n != 0 {
		t.Fatalf("%d reads of a file that never changed", n)
	}
	waitUntil(t, clk, 0)

	// A new key, refused in turn: it gets a wait of its own.
	v.put(k2)
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload: %v, %v", changed, err)
	}
	srv.set(nil, []string{k2})
	done = burst(t, c, srv.URL, 1)
	waitUntil(t, clk, 1+2)
	clk.Step(time.Minute)
	await(t, "the new key's wait to give up", done)
}

// A request leaves the wait when its context ends or the source is closed;
// the others stay until their own end.
func TestWaitEndsWithTheRequestOrTheSource(t *testing.T) {
	v := newVolume(t)
	k1 := newKey(t)
	v.put(k1)
	clk := clocktesting.NewFakeClock(time.Now())
	s := openOn(t, clk, Options{Path: v.path(), NoWatch: true, Resync: -1})
	srv := newAuthServer(t)
	srv.set(nil, []string{k1})
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: time.Hour})

	ctx, cancel := context.WithCancel(context.Background())
	one := make(chan []int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Error(err)
			one <- nil
			return
		}
		readAll(t, resp)
		one <- []int{resp.StatusCode}
	}()
	others := burst(t, c, srv.URL, 3)
	waitUntil(t, clk, 4+2)
	cancel()
	if got := await(t, "the cancelled request", one); len(got) != 1 || got[0] != http.StatusUnauthorized {
		t.Fatalf("the cancelled request: %v, want the 401", got)
	}
	waitUntil(t, clk, 3+2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if statuses := await(t, "Close to end the wait", others); count(statuses, http.StatusUnauthorized) != 3 {
		t.Fatalf("statuses %v", statuses)
	}
}
