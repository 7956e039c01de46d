package sweeper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// These tests move time by stepping a fake clock: a sweep happens when the
// test steps the clock by an interval, and the test waits for it to finish.
// Nothing waits for real time to pass; real timeouts below only guard
// against hanging.

// fixture is a Listener on a fake clock, with one accepted connection.
type fixture struct {
	clk      *clocktesting.FakeClock
	ln       *Listener
	interval time.Duration
	swept    chan struct{}
	// server and client are the two ends of the accepted connection.
	server, client net.Conn
}

// newFixture starts a Listener sweeping every interval of the fake clock,
// which starts at the real time: net/http sets its deadlines from time.Now.
func newFixture(t *testing.T, interval time.Duration, dial bool) *fixture {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{clk: clocktesting.NewFakeClock(time.Now()), interval: interval, swept: make(chan struct{}, 64)}
	f.ln = newListener(inner, interval, f.clk, func() { f.swept <- struct{}{} })
	// Last of the clean-ups: one more sweep finds the listener closed with
	// no connections and ends.
	t.Cleanup(func() { f.clk.Step(f.interval) })
	t.Cleanup(func() { _ = f.ln.Close() })
	// The sweep's ticker must exist before the first step.
	within(t, 10*time.Second, "the sweep's ticker", func() {
		for !f.clk.HasWaiters() {
			runtime.Gosched()
		}
	})
	if !dial {
		return f
	}
	if f.client, err = net.Dial("tcp", f.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.client.Close() })
	if f.server, err = f.ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.server.Close() })
	return f
}

// sweep steps the clock by n intervals, one sweep each, and waits for them.
func (f *fixture) sweep(t *testing.T, n int) {
	t.Helper()
	for range n {
		f.clk.Step(f.interval)
		select {
		case <-f.swept:
		case <-time.After(10 * time.Second):
			t.Fatal("no sweep after a step of the clock")
		}
	}
}

func (f *fixture) forced(bit uint32) bool { return f.server.(*conn).forced.Load()&bit != 0 }

// within runs f and fails the test if it has not returned after d: a guard
// against hanging, not a timing assertion.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %s", what, d)
	}
}

// waitIOWait waits until a goroutine running fn (a function name, as in a
// stack trace) is blocked on the network.
func waitIOWait(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	within(t, 10*time.Second, fn+" blocking on the network", func() {
		for {
			for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
				if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
					return
				}
			}
			time.Sleep(time.Millisecond) // polling for a state, not waiting for a time
		}
	})
}

// readsByte checks that what the client sends, the server reads.
func readsByte(t *testing.T, server, client net.Conn, c byte, what string) {
	t.Helper()
	if _, err := client.Write([]byte{c}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	var err error
	within(t, 10*time.Second, what, func() { _, err = server.Read(b) })
	if err != nil || b[0] != c {
		t.Fatalf("%s: read %q, %v; want %q", what, b, err, c)
	}
}

// blockedRead starts a read on server, waits until it blocks, and returns
// where its error will arrive.
func blockedRead(t *testing.T, server net.Conn) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { _, err := server.Read(make([]byte, 1)); errc <- err }()
	waitIOWait(t, "sweeper.blockedRead.func1")
	return errc
}

func deadlineError(t *testing.T, errc <-chan error, what string) {
	t.Helper()
	var err error
	within(t, 10*time.Second, what, func() { err = <-errc })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: %v, want a deadline error", what, err)
	}
}

func TestDeadlineEndsABlockedRead(t *testing.T) {
	f := newFixture(t, 5*time.Millisecond, true)
	if err := f.server.SetReadDeadline(f.clk.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	errc := blockedRead(t, f.server)
	f.sweep(t, 3)
	if f.forced(forcedRead) {
		t.Fatal("forced 15 ms into a 20 ms deadline")
	}
	select {
	case err := <-errc:
		t.Fatalf("the read ended before its deadline: %v", err)
	default:
	}
	f.sweep(t, 1)
	deadlineError(t, errc, "read past its deadline")
}

func TestDeadlineMovedLaterDoesNotFire(t *testing.T) {
	f := newFixture(t, 2*time.Millisecond, true)
	_ = f.server.SetReadDeadline(f.clk.Now().Add(5 * time.Millisecond))
	_ = f.server.SetReadDeadline(f.clk.Now().Add(time.Hour))
	f.sweep(t, 25) // many sweeps past the first deadline
	if f.forced(forcedRead) {
		t.Fatal("the abandoned deadline was forced")
	}
	readsByte(t, f.server, f.client, 'x', "read after the deadline moved")
}

// A deadline the sweep has already forced is lifted when a later one is set.
func TestDeadlineForcedThenMovedLater(t *testing.T) {
	f := newFixture(t, 2*time.Millisecond, true)
	_ = f.server.SetReadDeadline(f.clk.Now().Add(5 * time.Millisecond))
	f.sweep(t, 3)
	if !f.forced(forcedRead) {
		t.Fatal("the sweep did not force a passed deadline")
	}
	_ = f.server.SetReadDeadline(f.clk.Now().Add(time.Hour))
	if f.forced(forcedRead) {
		t.Fatal("a later deadline left the forced one in place")
	}
	f.sweep(t, 10)
	readsByte(t, f.server, f.client, 'z', "read after the forced deadline was lifted")
}

// http.Server.Shutdown closes the listener before it waits for the
// connections: their deadlines must still fire.
func TestDeadlineAfterTheListenerCloses(t *testing.T) {
	f := newFixture(t, 5*time.Millisecond, true)
	_ = f.ln.Close()
	_ = f.server.SetReadDeadline(f.clk.Now().Add(20 * time.Millisecond))
	errc := blockedRead(t, f.server)
	f.sweep(t, 4)
	deadlineError(t, errc, "read past its deadline after the listener closed")
}

// A deadline of "now" acts at once too (a handler may cancel a read so).
func TestDeadlineOfNowActsAtOnce(t *testing.T) {
	f := newFixture(t, time.Hour, true) // no sweep during the test
	errc := blockedRead(t, f.server)
	_ = f.server.SetReadDeadline(f.clk.Now())
	deadlineError(t, errc, "read after a deadline of now")
}

// A deadline already in the past acts at once, not at the next sweep:
// net/http relies on it to stop its background read after every request.
func TestDeadlineInThePastActsAtOnce(t *testing.T) {
	f := newFixture(t, time.Hour, true) // no sweep during the test
	errc := blockedRead(t, f.server)
	_ = f.server.SetReadDeadline(aLongTimeAgo)
	deadlineError(t, errc, "read after a past deadline")
	// Cleared, the connection reads again.
	_ = f.server.SetReadDeadline(time.Time{})
	readsByte(t, f.server, f.client, 'y', "read after clearing the deadline")
}

func TestDeadlineEndsABlockedWrite(t *testing.T) {
	f := newFixture(t, 5*time.Millisecond, true)
	_ = f.server.SetWriteDeadline(f.clk.Now().Add(50 * time.Millisecond))
	errc := make(chan error, 1)
	// The client never reads: once the socket buffers are full, Write blocks
	// until the deadline ends it.
	go func() {
		chunk := make([]byte, 1<<20)
		var err error
		for err == nil {
			_, err = f.server.Write(chunk)
		}
		errc <- err
	}()
	waitIOWait(t, "sweeper.TestDeadlineEndsABlockedWrite.func1")
	f.sweep(t, 10)
	deadlineError(t, errc, "write to a client that does not read")
}

func TestListenerForgetsClosedConnections(t *testing.T) {
	f := newFixture(t, time.Hour, true)
	_ = f.server.Close()
	_ = f.server.Close()
	f.ln.mu.Lock()
	n := len(f.ln.conns)
	f.ln.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections still tracked after close", n)
	}
}

// The server's HTTP timeouts still protect it on a Listener: a client that
// never finishes its headers is disconnected, and keep-alive requests do not
// wait for a sweep between them.
func TestListenerHTTPTimeouts(t *testing.T) {
	serve := func(t *testing.T, interval time.Duration) *fixture {
		f := newFixture(t, interval, false)
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "ok\n")
			}),
			ReadHeaderTimeout: 50 * time.Millisecond, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		}
		go func() { _ = srv.Serve(f.ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return f
	}

	t.Run("slow headers", func(t *testing.T) {
		f := serve(t, 5*time.Millisecond)
		c, err := net.Dial("tcp", f.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil { // and never the blank line
			t.Fatal(err)
		}
		// A minute on: whether net/http set its 50 ms header deadline
		// before this sweep or sets it after, it is past, and the sweep or
		// the setter forces it.
		f.clk.Step(time.Minute)
		<-f.swept
		var rerr error
		within(t, 10*time.Second, "a client with unfinished headers", func() { _, rerr = io.ReadAll(c) })
		if rerr != nil && !errors.Is(rerr, net.ErrClosed) && !strings.Contains(rerr.Error(), "reset") {
			t.Fatalf("reading from the server: %v", rerr)
		}
	})

	t.Run("keep-alive without sweeps", func(t *testing.T) {
		f := serve(t, time.Hour)
		c, err := net.Dial("tcp", f.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		within(t, 30*time.Second, "100 requests on one connection", func() {
			for i := range 100 {
				if _, err := fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i); err != nil {
					t.Error(err)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("request %d: status %d", i, resp.StatusCode)
					return
				}
			}
		})
	})
}

// BenchmarkSetDeadline is what net/http does to a keep-alive connection per
// request: a read deadline ahead, a past one (ending its background read),
// clearing it, and a write deadline ahead. It is the sweeper's share of the
// hot path.
func BenchmarkSetDeadline(b *testing.B) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln := New(inner, 100*time.Millisecond, clock.RealClock{})
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		_ = server.SetReadDeadline(now.Add(5 * time.Second))
		_ = server.SetReadDeadline(aLongTimeAgo)
		_ = server.SetReadDeadline(time.Time{})
		_ = server.SetWriteDeadline(now.Add(10 * time.Second))
	}
}
