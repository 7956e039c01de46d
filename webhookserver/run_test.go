package webhookserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/records"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// eventually polls cond until it holds, for things that happen on other
// goroutines (informer events); it never waits for the clock.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func recordSecret(t *testing.T, ns string, r *record.Record) *corev1.Secret {
	t.Helper()
	data, err := record.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: record.Name(r.Owner.Namespace, r.Owner.Name, r.Owner.UID), Labels: record.Labels(),
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "meterr-operator"}},
		},
		Data: map[string][]byte{record.DataKey: data},
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// testLogger fails the test if a log line holds one of the keys.
func testLogger(t *testing.T, keys *[]string) logr.Logger { return (&logLines{}).logger(t, keys) }

// logLines keeps the lines a logger wrote.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

// logger is testLogger, keeping every line in l.
func (l *logLines) logger(t *testing.T, keys *[]string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		for _, k := range *keys {
			if strings.Contains(args, k) {
				t.Errorf("log line holds a key: %s", prefix)
			}
		}
		l.mu.Lock()
		l.lines = append(l.lines, prefix+" "+args)
		l.mu.Unlock()
	}, funcr.Options{Verbosity: 4})
}

// with returns the lines that contain s.
func (l *logLines) with(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func get(t *testing.T, url, key string) (int, http.Header, string) {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func TestRun(t *testing.T) {
	const ns = "meterr-system"
	key, other, broken := newKey(t, "production"), newKey(t, "production"), newKey(t, "production")
	keys := []string{key, other, broken}
	rec := newRecord("web", standard(), key)
	elsewhere := newRecord("elsewhere", standard(), other)
	cs := fake.NewClientset(recordSecret(t, ns, rec), recordSecret(t, "default", elsewhere))

	// Hold the initial list so that /readyz can be seen before the sync.
	release := make(chan struct{})
	released := false
	releaseOnce := func() {
		if !released {
			released = true
			close(release)
		}
	}
	t.Cleanup(releaseOnce)
	cs.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release
		return false, nil, nil
	})

	ln, mln := listen(t), listen(t)
	base, metricsURL := "http://"+ln.Addr().String(), "http://"+mln.Addr().String()+"/metrics"
	o := DefaultOptions()
	o.Version = "test"
	o.ShutdownTimeout = 5 * time.Second
	o.Clock = clocktesting.NewFakeClock(t0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	logs := &logLines{}
	go func() {
		done <- run(ctx, o, logs.logger(t, &keys), runDeps{secrets: fakeSecrets(cs, ns), listener: ln, metricsListener: mln})
	}()

	if code, _, _ := get(t, base+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the first sync: %d", code)
	}
	if code, _, _ := get(t, base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	releaseOnce()
	eventually(t, "readyz", func() bool { c, _, _ := get(t, base+"/readyz", ""); return c == http.StatusOK })

	// Ready means loaded: the key works at once. Its window is that of
	// o.Clock, the one clock of the decisions and the limiter.
	if code, h, body := get(t, base+request.VerifyPath, key); code != http.StatusOK ||
		!strings.Contains(body, `"reset":"`+resetT0+`"`) || h.Get("X-RateLimit-Reset") != strconv.FormatInt(t0.Truncate(time.Hour).Add(time.Hour).Unix(), 10) {
		t.Fatalf("verify: %d %v %s (want the window of o.Clock)", code, h, body)
	}
	// Records outside the records namespace are not read.
	if code, _, _ := get(t, base+request.VerifyPath, other); code != http.StatusUnauthorized {
		t.Fatalf("record in another namespace accepted: %d", code)
	}

	secrets := cs.CoreV1().Secrets(ns)
	// A record update (disabled) takes effect.
	rec.Policy.Disabled = true
	if _, err := secrets.Update(ctx, recordSecret(t, ns, rec), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "disabled key refused", func() bool { c, _, _ := get(t, base+request.VerifyPath, key); return c == http.StatusUnauthorized })
	rec.Policy.Disabled = false
	if _, err := secrets.Update(ctx, recordSecret(t, ns, rec), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-enabled key", func() bool { c, _, _ := get(t, base+request.VerifyPath, key); return c == http.StatusOK })

	// A record that cannot be decoded is skipped and counted; its old
	// entries go (fail closed).
	b := newRecord("broken", standard(), broken)
	bs := recordSecret(t, ns, b)
	if _, err := secrets.Create(ctx, bs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new record", func() bool { c, _, _ := get(t, base+request.VerifyPath, broken); return c == http.StatusOK })
	bs.Data[record.DataKey] = []byte(`{"formatVersion":99}`)
	if _, err := secrets.Update(ctx, bs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "undecodable record dropped", func() bool { c, _, _ := get(t, base+request.VerifyPath, broken); return c == http.StatusUnauthorized })

	// Deleting a record removes its keys.
	if err := secrets.Delete(ctx, recordSecret(t, ns, rec).Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted record", func() bool { c, _, _ := get(t, base+request.VerifyPath, key); return c == http.StatusUnauthorized })

	code, _, metrics := get(t, metricsURL, "")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`meterr_auth_decisions_total{code="ok"}`, `meterr_auth_decisions_total{code="invalid_api_key"}`,
		"meterr_auth_request_duration_seconds_bucket", "meterr_auth_records_loaded 0", "meterr_auth_keys_loaded 0",
		"meterr_auth_record_errors_total 1", "go_goroutines", `meterr_build_info{commit="`, `version="test"} 1`,
		// http.DefaultClient keeps its connections: the first is taken
		// over after its first request (--keepalive-takeover).
		"meterr_auth_connections_taken_over_total 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, k := range keys {
		if strings.Contains(metrics, k) {
			t.Error("metrics hold a key")
		}
	}

	// A connection taken over (its second request was answered by package
	// keepalive) and idle at shutdown is closed at once, not left to the
	// shutdown timeout.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = idle.Close() }()
	_ = idle.SetDeadline(time.Now().Add(10 * time.Second))
	idleReader := bufio.NewReader(idle)
	for range 2 {
		if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(idleReader, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if late := logs.with("did not finish in time"); len(late) > 0 {
		t.Errorf("shutdown waited for its timeout: %q", late)
	}
	_ = idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	var ne net.Error
	if _, err := idleReader.ReadByte(); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("a connection taken over is still open after shutdown (%v)", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestRunBindError(t *testing.T) {
	taken := listen(t)
	defer func() { _ = taken.Close() }()
	o := DefaultOptions()
	o.Listen = taken.Addr().String()
	o.MetricsAddr = "0"
	err := run(context.Background(), o, logr.Discard(), runDeps{secrets: fakeSecrets(fake.NewClientset(), o.RecordsNamespace)})
	if err == nil || !strings.Contains(err.Error(), "listening on "+o.Listen) {
		t.Fatalf("binding a taken port: %v", err)
	}
	o = DefaultOptions()
	o.Environment = "nope"
	if err := Run(context.Background(), nil, o, logr.Discard()); err == nil || !strings.Contains(err.Error(), "--environment") {
		t.Fatalf("Run with invalid options: %v", err)
	}
	// Options are validated before anything else: before the cluster is
	// reached, and before a listener is used.
	taken2 := listen(t)
	defer func() { _ = taken2.Close() }()
	if err := run(context.Background(), o, logr.Discard(), runDeps{config: &rest.Config{Host: "http://127.0.0.1:1"}, listener: taken2}); err == nil ||
		!strings.Contains(err.Error(), "--environment") {
		t.Fatalf("run with invalid options: %v", err)
	}
	o = DefaultOptions()
	o.Listen, o.MetricsAddr = "127.0.0.1:0", "0"
	o.TLSCertFile, o.TLSKeyFile = "/nonexistent/cert", "/nonexistent/key"
	if err := run(context.Background(), o, logr.Discard(), runDeps{secrets: fakeSecrets(fake.NewClientset(), o.RecordsNamespace)}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("missing TLS files: %v", err)
	}
}

// TestHeaderLimit sends requests just under and over 64 KiB of headers to a
// real listener. With --keepalive-takeover each comes after a small request
// on the same connection, so that the limit is that of the connection taken
// over, which is exact there (net/http's is not on a reused connection: it
// allows up to 4 KiB more).
func TestHeaderLimit(t *testing.T) {
	for _, takeover := range []bool{false, true} {
		t.Run(fmt.Sprintf("takeover=%v", takeover), func(t *testing.T) {
			f := newFixture(t, nil)
			ln := listen(t)
			s, ka := newAPIServer(f.srv, DefaultMaxHeaderBytes, takeover)
			go func() { _ = s.Serve(ln) }()
			defer func() { _ = s.Close() }()
			if ka != nil {
				defer ka.Close()
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			url := "http://" + ln.Addr().String() + request.VerifyPath
			do := func(pad int) int {
				r, _ := http.NewRequest(http.MethodGet, url, nil)
				r.Header.Set("X-Pad", strings.Repeat("a", pad))
				resp, err := client.Do(r)
				if err != nil {
					t.Fatalf("%d bytes: %v", pad, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if !takeover {
					// A new connection each time: net/http's limit
					// is exact only on a connection's first request.
					client.CloseIdleConnections()
				}
				return resp.StatusCode
			}
			for _, tc := range []struct {
				size int
				want int
			}{
				{60 << 10, http.StatusUnauthorized},
				{64<<10 + 1, http.StatusRequestHeaderFieldsTooLarge},
				{80 << 10, http.StatusRequestHeaderFieldsTooLarge},
			} {
				if takeover {
					if code := do(1); code != http.StatusUnauthorized {
						t.Fatalf("small request: %d", code)
					}
				}
				if code := do(tc.size); code != tc.want {
					t.Errorf("%d bytes of headers: %d, want %d", tc.size, code, tc.want)
				}
			}
			if ka != nil && ka.TakenOver() == 0 {
				t.Fatal("no connection was taken over")
			}
		})
	}
}

// TestRawHeaders sends bytes that are not UTF-8 in headers over a real
// connection, as a hostile client would.
func TestRawHeaders(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) { c.Routes = []Route{{Method: "*", Prefix: "/", Permission: "read"}} })
	pol := standard()
	pol.Domains = []string{"app.example.com"}
	key := f.add("dom", pol)
	ln := listen(t)
	s := newHTTPServer(f.srv, DefaultMaxHeaderBytes)
	go func() { _ = s.Serve(ln) }()
	defer func() { _ = s.Close() }()

	for _, tc := range []struct {
		name, path, headers string
		want                int
	}{
		{"authorization", request.CheckPath + "/x", "Authorization: Bearer \xff\xfe\xfd" + key[3:] + "\r\n", 401},
		{"origin", request.CheckPath + "/x", "Authorization: Bearer " + key + "\r\nOrigin: https://app.example.com\xff\r\n", 403},
		{"forwarded uri", request.CheckPath, "Authorization: Bearer " + key + "\r\nOrigin: https://app.example.com\r\nX-Original-URI: /\xc3\x28\xff\r\n", 200},
		{"xff", request.CheckPath + "/x", "Authorization: Bearer " + key + "\r\nOrigin: https://app.example.com\r\nX-Forwarded-For: \xff\xfe\r\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n", tc.path, tc.headers); err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(conn)
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			status := string(raw[:min(len(raw), 12)])
			if want := fmt.Sprintf("HTTP/1.1 %d", tc.want); status != want {
				t.Fatalf("got %q, want %q: %s", status, want, raw)
			}
			if strings.Contains(string(raw), key) || strings.Contains(string(raw), key[3:]) {
				t.Fatal("answer echoes the key")
			}
		})
	}
}

// Two record Secrets claim one key hash: loaded through package records,
// the index keeps it with the
// Secret created first, whether the records arrive as watch events or in a
// relist, and in either order; the conflict is logged with both records and
// never the key.
func TestLoaderHashConflict(t *testing.T) {
	shared := newKey(t, "production")
	early := recordSecret(t, "meterr-system", newRecord("victim", standard(), shared))
	early.CreationTimestamp = metav1.NewTime(t0.Add(-24 * time.Hour))
	late := recordSecret(t, "meterr-system", newRecord("thief", standard(), shared))
	late.CreationTimestamp = metav1.NewTime(t0)
	if early.Name < late.Name {
		// Make sure the creation time decides, not the name.
		early.Name, late.Name = late.Name, early.Name
	}
	for _, tc := range []struct {
		name string
		load func(st *records.Store) error
	}{
		{"events, first claimant first", func(st *records.Store) error { _ = st.Add(early); return st.Add(late) }},
		{"events, first claimant last", func(st *records.Store) error { _ = st.Add(late); return st.Add(early) }},
		{"relist", func(st *records.Store) error { return st.Replace([]any{late, early}, "1") }},
		{"relist, other order", func(st *records.Store) error { return st.Replace([]any{early, late}, "1") }},
		{"relist after events", func(st *records.Store) error {
			_ = st.Add(early)
			_ = st.Add(late)
			_ = st.Update(late)
			return st.Replace([]any{late, early}, "2")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			log := funcr.New(func(prefix, args string) { logs.WriteString(prefix + " " + args + "\n") }, funcr.Options{})
			idx := index.New()
			st, err := records.NewStore(records.Config{Sink: idx, Limiter: ratelimit.NewMemory(), Log: log})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.load(st); err != nil {
				t.Fatal(err)
			}
			e, ok := idx.Lookup(apikey.HashOf(shared))
			if !ok || e.Policy.Record() != early.Name {
				t.Fatalf("shared key held by %q, want the record created first", e.Policy.Record())
			}
			if idx.HashConflicts() == 0 {
				t.Fatal("conflict not counted")
			}
			out := logs.String()
			if !strings.Contains(out, early.Name) || !strings.Contains(out, late.Name) || !strings.Contains(out, apikey.HashOf(shared).ID()) {
				t.Errorf("the conflict is not logged with both records and the key id")
			}
			if strings.Contains(out, shared) {
				t.Error("a log line holds the key")
			}
		})
	}
}
