package webhookserver

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// logFixture is a fixture whose server logs decisions in mode into lines.
func logFixture(t *testing.T, mode string) (*fixture, *[]string) {
	t.Helper()
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{})
	f := newFixture(t, func(c *ServerConfig) {
		c.LogDecisions = mode
		c.Log = log
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		c.Routes = []Route{{Method: "*", Prefix: "/v1/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}}
	})
	return f, &lines
}

// noKey fails the test if a line holds one of the keys (or the bearer
// credential's body).
func noKey(t *testing.T, lines []string, keys ...string) {
	t.Helper()
	for _, l := range lines {
		for _, k := range keys {
			if strings.Contains(l, k) || strings.Contains(l, k[len("mtr_live_"):]) {
				t.Errorf("a decision log line holds a key")
			}
		}
		if strings.Contains(strings.ToLower(l), "authorization") || strings.Contains(l, "Bearer") {
			t.Errorf("a decision log line mentions the Authorization header")
		}
	}
}

func TestDecisionLogDenied(t *testing.T) {
	f, lines := logFixture(t, LogDecisionsDenied)
	pol := standard()
	pol.IPAllowlist = []string{"198.51.100.0/24"}
	pol.Permissions = []string{"read"}
	key := f.add("ip", pol)
	id := apikey.HashOf(key).ID()

	// Refused: the client address is the one X-Forwarded-For gave through
	// the trusted proxy.
	w := f.do(req{method: "POST", target: request.CheckPath + "/v1/usage/events?token=" + key, key: key, remote: "10.1.1.1:5000",
		header: http.Header{"X-Forwarded-For": {"192.0.2.7, 10.2.2.2"}, "Origin": {"https://app.example.com:8443"}}})
	if w.Code != http.StatusForbidden || errorCode(t, w) != "ip_not_allowed" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if len(*lines) != 1 {
		t.Fatalf("%d lines, want 1: %q", len(*lines), *lines)
	}
	l := (*lines)[0]
	for _, want := range []string{
		`"code"="ip_not_allowed"`, `"keyId"="` + id + `"`, `"owner"="team-a/ip"`, `"client"="192.0.2.7"`,
		`"peer"="10.1.1.1:5000"`, `"xForwardedFor"="192.0.2.7, 10.2.2.2"`, `"originHost"="app.example.com"`,
		`"endpoint"="check"`, `"method"="POST"`, `"path"="/v1/usage/events"`, `"required"="write"`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("line lacks %s: %s", want, l)
		}
	}

	// Allowed: not logged in denied mode.
	w = f.do(req{target: request.CheckPath + "/v1/x", key: key, remote: "198.51.100.4:1"})
	if w.Code != http.StatusOK {
		t.Fatalf("allowed request: %d %s", w.Code, w.Body)
	}
	if len(*lines) != 1 {
		t.Fatalf("denied mode logged an allowed request: %q", (*lines)[1:])
	}

	// Unknown key: the code, no key id; a key in X-Forwarded-For or the
	// path is hidden (and, not being an address, X-Forwarded-For leaves
	// the trusted proxy as the client).
	unknown := newKey(t, "production")
	w = f.do(req{key: unknown, remote: "10.1.1.1:1", target: request.CheckPath,
		header: http.Header{"X-Forwarded-For": {unknown}, "X-Original-Uri": {"/v1/keys/" + unknown + "/x?k=" + unknown}}})
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("unknown key: %d", w.Code)
	}
	if len(*lines) != 2 {
		t.Fatalf("%d lines, want 2", len(*lines))
	}
	l = (*lines)[1]
	for _, want := range []string{`"code"="invalid_api_key"`, `"client"="10.1.1.1"`, `"xForwardedFor"="mtr_[redacted]"`, `"path"="/v1/keys/mtr_[redacted]/x"`, `"method"="GET"`, `"required"="read"`} {
		if !strings.Contains(l, want) {
			t.Errorf("line lacks %s: %s", want, l)
		}
	}
	if strings.Contains(l, "keyId") {
		t.Errorf("an unknown key has a key id: %s", l)
	}

	// A verify refusal, and an invalid request.
	f.do(req{key: key, remote: "192.0.2.1:1"})
	f.do(req{target: request.CheckPath + "?permission=owner", key: key})
	if len(*lines) != 4 || !strings.Contains((*lines)[2], `"endpoint"="verify"`) || !strings.Contains((*lines)[2], `"required"="none"`) ||
		!strings.Contains((*lines)[3], `"code"="invalid_request"`) {
		t.Fatalf("lines: %q", (*lines)[2:])
	}
	noKey(t, *lines, key, unknown)
}

func TestDecisionLogAll(t *testing.T) {
	f, lines := logFixture(t, LogDecisionsAll)
	key := f.add("web", standard())
	if w := f.do(req{target: request.CheckPath + "/v1/usage", method: "POST", key: key, remote: "203.0.113.1:9"}); w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if len(*lines) != 1 || !strings.Contains((*lines)[0], `"code"="ok"`) || !strings.Contains((*lines)[0], `"client"="203.0.113.1"`) ||
		!strings.Contains((*lines)[0], `"owner"="team-a/web"`) {
		t.Fatalf("lines: %q", *lines)
	}
	noKey(t, *lines, key)
}

func TestDecisionLogOff(t *testing.T) {
	for _, mode := range []string{"", LogDecisionsOff} {
		f, lines := logFixture(t, mode)
		if f.srv.core.LogsDecisions() {
			t.Fatalf("mode %q: the decision log is on", mode)
		}
		key := f.add("web", standard())
		f.do(req{key: key, target: request.CheckPath + "/v1/x"})
		f.do(req{key: newKey(t, "production")})
		if len(*lines) != 0 {
			t.Fatalf("mode %q logged: %q", mode, *lines)
		}
	}
	if _, err := NewServer(ServerConfig{Index: index.New(), LogDecisions: "some"}); err == nil {
		t.Fatal("an unknown mode was accepted")
	}
}

// A flood of refusals writes at most the bucket's burst, then its rate; the
// rest are counted, and the next line written says how many went missing.
func TestDecisionLogRateLimit(t *testing.T) {
	f, lines := logFixture(t, LogDecisionsDenied)
	const extra = 7
	for range answer.DecisionLogBurst + extra {
		f.do(req{key: "mtr_live_nope"})
	}
	if len(*lines) != answer.DecisionLogBurst {
		t.Fatalf("%d lines, want the burst of %d", len(*lines), answer.DecisionLogBurst)
	}
	if got := counterValue(t, f.reg, "meterr_auth_decision_logs_dropped_total"); got != extra {
		t.Fatalf("dropped = %v, want %d", got, extra)
	}
	f.clock.Step(time.Second / 10) // 10 lines' worth
	for range 20 {
		f.do(req{key: "mtr_live_nope"})
	}
	if len(*lines) != answer.DecisionLogBurst+answer.DecisionLogRate/10 {
		t.Fatalf("%d lines after a tenth of a second, want %d", len(*lines), answer.DecisionLogBurst+answer.DecisionLogRate/10)
	}
	if l := (*lines)[answer.DecisionLogBurst]; !strings.Contains(l, `"droppedBefore"=7`) {
		t.Fatalf("the first line after drops does not count them: %s", l)
	}
	if got := counterValue(t, f.reg, "meterr_auth_decision_logs_dropped_total"); got != extra+10 {
		t.Fatalf("dropped = %v, want %d", got, extra+10)
	}
}
