package webhookserver

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/meterr/meterr-operator/test/redistest"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
)

// The answers a client sees while Redis is down and the limiter fails closed:
// 503 rate_limit_unavailable (type api_error) with Retry-After, the limit and
// no counters, never 429 (nothing says the key is over its limit); an
// unlimited key does not depend on Redis. Once Redis is back and the probe
// has seen it, the key is counted again.
func TestServerRedisFailClosed(t *testing.T) {
	r := redistest.Start(t)
	rl, err := ratelimit.NewRedis(ratelimit.RedisOptions{URL: r.URL(), Timeout: time.Second,
		FailureMode: ratelimit.FailClosed, Log: logr.Discard(), ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Close() })
	f := newFixture(t, func(c *ServerConfig) { c.Limiter = rl })
	limited := f.add("limited", standard())
	pol := standard()
	pol.RequestsPerHour = 0
	unlimited := f.add("unlimited", pol)
	if w := f.do(req{key: limited}); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "999" {
		t.Fatalf("redis up: %d %v", w.Code, w.Header())
	}
	r.Stop()
	for _, path := range []string{"/v1/auth/verify", "/v1/auth/check/v1/usage"} {
		w := f.do(req{key: limited, target: path})
		// Not checkCommon: this is the one denial that is a 5xx.
		if w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" ||
			strings.Contains(w.Body.String(), limited) || strings.Contains(headerText(w.Header()), limited) {
			t.Fatalf("%s: %v %s", path, w.Header(), w.Body)
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("%s, redis down, fail closed: %d %v", path, w.Code, w.Header())
		}
		const want = `{"error":{"type":"api_error","message":"The rate limit could not be checked; retry after the time in Retry-After",` +
			`"code":"rate_limit_unavailable"}}`
		if got := strings.TrimSpace(w.Body.String()); got != want {
			t.Fatalf("%s: body %s, want %s", path, got, want)
		}
		if w.Header().Get("X-RateLimit-Limit") != "1000" || w.Header().Get("RateLimit-Policy") == "" ||
			w.Header().Get("X-RateLimit-Remaining") != "" || w.Header().Get("RateLimit") != "" {
			t.Fatalf("want the limit and the policy, no counters (unknown): %v", w.Header())
		}
		if w.Header().Get("X-Meterr-Key-Id") != "" {
			t.Fatalf("%s: identity headers on a refusal: %v", path, w.Header())
		}
	}
	if w := f.do(req{key: unlimited}); w.Code != http.StatusOK {
		t.Fatalf("unlimited key: %d", w.Code)
	}
	if got := decisionCount(t, f.reg, "rate_limit_unavailable"); got != 2 {
		t.Fatalf("decisions{code=rate_limit_unavailable} = %v, want 2", got)
	}
	if got := decisionCount(t, f.reg, "rate_limit_exceeded"); got != 0 {
		t.Fatalf("decisions{code=rate_limit_exceeded} = %v, want 0", got)
	}
	r.Restart()
	// Polled, not timed: the probe finds Redis back in the background.
	for deadline := time.Now().Add(60 * time.Second); !rl.Healthy(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the limiter did not see Redis back within a minute")
		}
	}
	if w := f.do(req{key: limited}); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "999" {
		t.Fatalf("redis back (empty): %d %v", w.Code, w.Header())
	}
}
