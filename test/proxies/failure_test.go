package proxies

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// What a client sees through the shipped configurations when the auth server
// is down, slow or not ready, and that the upstream's own failures are left
// alone: the "when the auth server fails" tables of
// docs/integrations/nginx/README.md and docs/integrations/caddy/README.md.

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + freePort(t)
}

// hangingAddr returns a loopback address that accepts connections and reads
// them, but never answers, until the test ends.
func hangingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = c.Read(make([]byte, 1<<16)) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// failingUpstream answers every request 500.
func failingUpstream(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream broke", http.StatusInternalServerError)
	}))
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// wantUnavailable checks the proxy's own fail-closed answer: 503
// auth_unavailable with the error JSON and Retry-After.
func wantUnavailable(t *testing.T, what string, a answer) {
	t.Helper()
	wantError(t, what, a, http.StatusServiceUnavailable, "auth_unavailable")
	if a.header.Get("Retry-After") != "1" {
		t.Errorf("%s: Retry-After %q, want 1", what, a.header.Get("Retry-After"))
	}
}

func TestNginxWhenAuthFails(t *testing.T) {
	need(t, "nginx")
	// The auth server answers 503 not_ready itself, NGINX mode or not, and
	// auth_request passes on only 401 and 403: the guide's 503 auth_unavailable.
	testWhenAuthFails(t, startNginx, "auth_unavailable")
}

func TestCaddyWhenAuthFails(t *testing.T) {
	need(t, "caddy")
	// forward_auth passes the auth server's own answer on.
	testWhenAuthFails(t, startCaddy, "not_ready")
}

func testWhenAuthFails(t *testing.T, proxy func(t *testing.T, auth, upstream string) string, notReadyCode string) {
	key := newKey(t)
	t.Run("auth server down", func(t *testing.T) {
		base := proxy(t, closedAddr(t), startUpstream(t))
		wantUnavailable(t, "auth server down", do(t, "GET", base+"/v1/things", key, nil))
	})
	t.Run("auth server not answering", func(t *testing.T) {
		// The guides set a one-second timeout; without it NGINX waits 60 s,
		// longer than do's 10 s, and this fails.
		base := proxy(t, hangingAddr(t), startUpstream(t))
		wantUnavailable(t, "auth server not answering", do(t, "GET", base+"/v1/things", key, nil))
	})
	t.Run("auth server answering 503", func(t *testing.T) {
		auth, k, _ := startAuthReady(t, false)
		base := proxy(t, auth, startUpstream(t))
		a := do(t, "GET", base+"/v1/things", k.valid, nil)
		wantError(t, "not ready", a, http.StatusServiceUnavailable, notReadyCode)
		if a.header.Get("Retry-After") == "" {
			t.Errorf("not ready: no Retry-After: %v", a.header)
		}
	})
	t.Run("upstream failures keep their status", func(t *testing.T) {
		auth, k, _ := startAuth(t)
		if a := do(t, "GET", proxy(t, auth, failingUpstream(t))+"/v1/things", k.valid, nil); a.status != http.StatusInternalServerError {
			t.Errorf("the upstream's 500 reached the client as %d: %s", a.status, a.body)
		}
		if a := do(t, "GET", proxy(t, auth, closedAddr(t))+"/v1/things", k.valid, nil); a.status != http.StatusBadGateway {
			t.Errorf("an unreachable upstream reached the client as %d, want the proxy's 502: %s", a.status, a.body)
		}
	})
}
