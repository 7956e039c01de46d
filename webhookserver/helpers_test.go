package webhookserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/internal/record/recordtest"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/records"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// fakeSecrets are the Secrets of namespace ns in a fake clientset, which
// (unlike an API server) cannot stream a list as a watch.
func fakeSecrets(cs *fake.Clientset, ns string) records.Secrets {
	return noWatchList{cs.CoreV1().Secrets(ns)}
}

type noWatchList struct{ records.Secrets }

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// t0 is half past an hour, so the window resets in 1800 seconds.
var t0 = time.Date(2025, 1, 15, 11, 30, 0, 0, time.UTC)

const resetT0 = "2025-01-15T12:00:00Z"

func newKey(t testing.TB, env string) string { return recordtest.Key(t, env) }

func mtime(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

// newRecord builds a record for owner team-a/name with one version per key,
// issued an hour before t0.
func newRecord(name string, pol record.Policy, keys ...string) *record.Record {
	return recordtest.New(name, pol, t0.Add(-time.Hour), keys...)
}

func standard() record.Policy { return recordtest.Standard() }

type fixture struct {
	t     testing.TB
	clock *clocktesting.FakeClock
	idx   *index.Index
	lim   *ratelimit.Memory
	srv   *Server
	reg   *prometheus.Registry
}

func newFixture(t testing.TB, mut func(*ServerConfig)) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: clocktesting.NewFakeClock(t0), idx: index.New(), lim: ratelimit.NewMemory(), reg: prometheus.NewRegistry()}
	c := ServerConfig{Index: f.idx, Limiter: f.lim, Clock: f.clock, Registerer: f.reg}
	if mut != nil {
		mut(&c)
	}
	srv, err := NewServer(c)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	// Tests decide as a synced server does; TestNotLoaded covers the time before.
	srv.SetReady(true)
	return f
}

// add indexes a record named after its owner and returns its first key (a new
// production key when none is given).
func (f *fixture) add(name string, pol record.Policy, keys ...string) string {
	f.t.Helper()
	if len(keys) == 0 {
		keys = []string{newKey(f.t, pol.Environment)}
	}
	if err := f.idx.Upsert("rec-"+name, newRecord(name, pol, keys...), t0); err != nil {
		f.t.Fatal(err)
	}
	return keys[0]
}

type req struct {
	method string
	target string
	key    string // sets "Authorization: Bearer <key>" unless empty
	remote string
	header http.Header
}

func (f *fixture) do(r req) *httptest.ResponseRecorder {
	f.t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	if r.target == "" {
		r.target = request.VerifyPath
	}
	hr := httptest.NewRequest(r.method, r.target, nil)
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	for k, v := range r.header {
		hr.Header[k] = v
	}
	if r.key != "" {
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, hr)
	return w
}

// errorCode returns the code of an error answer, checking its shape.
func errorCode(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(w.Result().Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("answer %d is not JSON: %v: %q", w.Code, err, raw)
	}
	if body.Error.Type == "" || body.Error.Message == "" || body.Error.Code == "" {
		t.Fatalf("answer %d is not an error: %s", w.Code, raw)
	}
	return body.Error.Code
}

// checkCommon checks what every answer carries, and that it does not echo
// any of the secrets.
func checkCommon(t testing.TB, w *httptest.ResponseRecorder, secrets ...string) {
	t.Helper()
	if got := w.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q", got)
	}
	if w.Code >= 500 {
		t.Errorf("status %d: a denial must never be 5xx", w.Code)
	}
	for _, s := range secrets {
		if s != "" && (strings.Contains(w.Body.String(), s) || strings.Contains(headerText(w.Header()), s)) {
			t.Errorf("answer echoes a key")
		}
	}
}

func headerText(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

var rateLimitHeaders = []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit-Policy", "RateLimit"}

func hasRateLimitHeaders(h http.Header) (all, none bool) {
	all, none = true, true
	for _, k := range rateLimitHeaders {
		if h.Get(k) == "" {
			all = false
		} else {
			none = false
		}
	}
	return all, none
}
