package webhookserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// coarsePair returns the server and client ends of a TCP connection accepted
// through a coarseListener that sweeps every interval.
func coarsePair(t *testing.T, interval time.Duration) (*coarseListener, net.Conn, net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newCoarseListener(inner, interval)
	t.Cleanup(func() { _ = ln.Close() })
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	return ln, server, client
}

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

// blockedReadEnds blocks a read on server, calls set, and checks that the
// read ends with a deadline error.
func blockedReadEnds(t *testing.T, server net.Conn, what string, set func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { _, err := server.Read(make([]byte, 1)); errc <- err }()
	time.Sleep(10 * time.Millisecond) // let the read block
	set()
	var err error
	within(t, 10*time.Second, what, func() { err = <-errc })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: %v, want a deadline error", what, err)
	}
}

func TestCoarseDeadlineEndsABlockedRead(t *testing.T) {
	_, server, _ := coarsePair(t, 5*time.Millisecond)
	if err := server.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var err error
	within(t, 10*time.Second, "read past its deadline", func() { _, err = server.Read(make([]byte, 1)) })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a deadline error", err)
	}
}

func TestCoarseDeadlineMovedLaterDoesNotFire(t *testing.T) {
	_, server, client := coarsePair(t, 2*time.Millisecond)
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	_ = server.SetReadDeadline(time.Now().Add(time.Hour))
	time.Sleep(50 * time.Millisecond) // many sweeps past the first deadline
	readsByte(t, server, client, 'x', "read after the deadline moved")
}

// A deadline the sweep has already forced is lifted when a later one is set.
func TestCoarseDeadlineForcedThenMovedLater(t *testing.T) {
	_, server, client := coarsePair(t, 2*time.Millisecond)
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	c := server.(*coarseConn)
	within(t, 10*time.Second, "the sweep forcing a passed deadline", func() {
		for c.forced.Load()&forcedRead == 0 {
			time.Sleep(time.Millisecond)
		}
	})
	_ = server.SetReadDeadline(time.Now().Add(time.Hour))
	if c.forced.Load()&forcedRead != 0 {
		t.Fatal("a later deadline left the forced one in place")
	}
	time.Sleep(20 * time.Millisecond) // more sweeps
	readsByte(t, server, client, 'z', "read after the forced deadline was lifted")
}

// http.Server.Shutdown closes the listener before it waits for the
// connections: their deadlines must still fire.
func TestCoarseDeadlineAfterTheListenerCloses(t *testing.T) {
	ln, server, _ := coarsePair(t, 5*time.Millisecond)
	_ = ln.Close()
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var err error
	within(t, 10*time.Second, "read past its deadline after the listener closed", func() { _, err = server.Read(make([]byte, 1)) })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a deadline error", err)
	}
}

// A deadline of "now" acts at once too (a handler may cancel a read so).
func TestCoarseDeadlineOfNowActsAtOnce(t *testing.T) {
	_, server, _ := coarsePair(t, time.Hour)
	blockedReadEnds(t, server, "read after a deadline of now", func() { _ = server.SetReadDeadline(time.Now()) })
}

// A deadline already in the past acts at once, not at the next sweep:
// net/http relies on it to stop its background read after every request.
func TestCoarseDeadlineInThePastActsAtOnce(t *testing.T) {
	_, server, client := coarsePair(t, time.Hour) // no sweep during the test
	blockedReadEnds(t, server, "read after a past deadline", func() { _ = server.SetReadDeadline(aLongTimeAgo) })
	// Cleared, the connection reads again.
	_ = server.SetReadDeadline(time.Time{})
	readsByte(t, server, client, 'y', "read after clearing the deadline")
}

func TestCoarseDeadlineEndsABlockedWrite(t *testing.T) {
	_, server, _ := coarsePair(t, 5*time.Millisecond)
	_ = server.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	chunk := make([]byte, 1<<20)
	var err error
	// The client never reads: once the socket buffers are full, Write blocks
	// until the deadline ends it.
	within(t, 30*time.Second, "write to a client that does not read", func() {
		for err == nil {
			_, err = server.Write(chunk)
		}
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write: %v, want a deadline error", err)
	}
}

func TestCoarseListenerForgetsClosedConnections(t *testing.T) {
	ln, server, _ := coarsePair(t, time.Hour)
	_ = server.Close()
	_ = server.Close()
	ln.mu.Lock()
	n := len(ln.conns)
	ln.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections still tracked after close", n)
	}
}

// The server's HTTP timeouts still protect it on a coarse listener: a client
// that never finishes its headers is disconnected, and keep-alive requests
// do not wait for a sweep between them.
func TestCoarseListenerHTTPTimeouts(t *testing.T) {
	serve := func(t *testing.T, interval time.Duration) string {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := newCoarseListener(inner, interval)
		srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok\n")
		}), DefaultMaxHeaderBytes)
		srv.ReadHeaderTimeout = 50 * time.Millisecond
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return ln.Addr().String()
	}

	t.Run("slow headers", func(t *testing.T) {
		c, err := net.Dial("tcp", serve(t, 5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil { // and never the blank line
			t.Fatal(err)
		}
		var rerr error
		within(t, 10*time.Second, "a client with unfinished headers", func() { _, rerr = io.ReadAll(c) })
		if rerr != nil && !errors.Is(rerr, net.ErrClosed) && !strings.Contains(rerr.Error(), "reset") {
			t.Fatalf("reading from the server: %v", rerr)
		}
	})

	t.Run("keep-alive without sweeps", func(t *testing.T) {
		c, err := net.Dial("tcp", serve(t, time.Hour))
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
