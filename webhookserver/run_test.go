package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver/index"
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
func testLogger(t *testing.T, keys *[]string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		for _, k := range *keys {
			if strings.Contains(args, k) {
				t.Errorf("log line holds a key: %s", prefix)
			}
		}
	}, funcr.Options{Verbosity: 4})
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cs, o, testLogger(t, &keys), runDeps{clock: clocktesting.NewFakeClock(t0), listener: ln, metricsListener: mln})
	}()

	if code, _, _ := get(t, base+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before the first sync: %d", code)
	}
	if code, _, _ := get(t, base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	releaseOnce()
	eventually(t, "readyz", func() bool { c, _, _ := get(t, base+"/readyz", ""); return c == http.StatusOK })

	// Ready means loaded: the key works at once.
	if code, _, body := get(t, base+verifyPath, key); code != http.StatusOK {
		t.Fatalf("verify: %d %s", code, body)
	}
	// Records outside the records namespace are not read.
	if code, _, _ := get(t, base+verifyPath, other); code != http.StatusUnauthorized {
		t.Fatalf("record in another namespace accepted: %d", code)
	}

	secrets := cs.CoreV1().Secrets(ns)
	// A record update (disabled) takes effect.
	rec.Policy.Disabled = true
	if _, err := secrets.Update(ctx, recordSecret(t, ns, rec), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "disabled key refused", func() bool { c, _, _ := get(t, base+verifyPath, key); return c == http.StatusUnauthorized })
	rec.Policy.Disabled = false
	if _, err := secrets.Update(ctx, recordSecret(t, ns, rec), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-enabled key", func() bool { c, _, _ := get(t, base+verifyPath, key); return c == http.StatusOK })

	// A record that cannot be decoded is skipped and counted; its old
	// entries go (fail closed).
	b := newRecord("broken", standard(), broken)
	bs := recordSecret(t, ns, b)
	if _, err := secrets.Create(ctx, bs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new record", func() bool { c, _, _ := get(t, base+verifyPath, broken); return c == http.StatusOK })
	bs.Data[record.DataKey] = []byte(`{"formatVersion":99}`)
	if _, err := secrets.Update(ctx, bs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "undecodable record dropped", func() bool { c, _, _ := get(t, base+verifyPath, broken); return c == http.StatusUnauthorized })

	// Deleting a record removes its keys.
	if err := secrets.Delete(ctx, recordSecret(t, ns, rec).Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted record", func() bool { c, _, _ := get(t, base+verifyPath, key); return c == http.StatusUnauthorized })

	code, _, metrics := get(t, metricsURL, "")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`meterr_auth_decisions_total{code="ok"}`, `meterr_auth_decisions_total{code="invalid_api_key"}`,
		"meterr_auth_request_duration_seconds_bucket", "meterr_auth_records_loaded 0", "meterr_auth_keys_loaded 0",
		"meterr_auth_record_errors_total 1", "go_goroutines", `meterr_build_info{commit="`, `version="test"} 1`,
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

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
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
	err := run(context.Background(), fake.NewClientset(), o, logr.Discard(), runDeps{})
	if err == nil || !strings.Contains(err.Error(), "listening on "+o.Listen) {
		t.Fatalf("binding a taken port: %v", err)
	}
	o = DefaultOptions()
	o.Environment = "nope"
	if err := Run(context.Background(), nil, o, logr.Discard()); err == nil {
		t.Fatal("Run accepted invalid options")
	}
	o = DefaultOptions()
	o.Listen, o.MetricsAddr = "127.0.0.1:0", "0"
	o.TLSCertFile, o.TLSKeyFile = "/nonexistent/cert", "/nonexistent/key"
	if err := run(context.Background(), fake.NewClientset(), o, logr.Discard(), runDeps{}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("missing TLS files: %v", err)
	}
}

// TestHeaderLimit sends requests just under and over 64 KiB of headers to a
// real listener.
func TestHeaderLimit(t *testing.T) {
	f := newFixture(t, nil)
	ln := listen(t)
	s := newHTTPServer(f.srv, DefaultMaxHeaderBytes)
	go func() { _ = s.Serve(ln) }()
	defer func() { _ = s.Close() }()
	url := "http://" + ln.Addr().String() + verifyPath
	for _, tc := range []struct {
		size int
		want int
	}{
		{60 << 10, http.StatusUnauthorized},
		{64<<10 + 1, http.StatusRequestHeaderFieldsTooLarge},
		{80 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		r, _ := http.NewRequest(http.MethodGet, url, nil)
		r.Header.Set("X-Pad", strings.Repeat("a", tc.size))
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatalf("%d bytes: %v", tc.size, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%d bytes of headers: %d, want %d", tc.size, resp.StatusCode, tc.want)
		}
	}
}

// TestRawHeaders sends bytes that are not UTF-8 in headers over a real
// connection, as a hostile client would.
func TestRawHeaders(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) { c.Routes = []Route{{"*", "/", "read"}} })
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
		{"authorization", checkPath + "/x", "Authorization: Bearer \xff\xfe\xfd" + key[3:] + "\r\n", 401},
		{"origin", checkPath + "/x", "Authorization: Bearer " + key + "\r\nOrigin: https://app.example.com\xff\r\n", 403},
		{"forwarded uri", checkPath, "Authorization: Bearer " + key + "\r\nOrigin: https://app.example.com\r\nX-Original-URI: /\xc3\x28\xff\r\n", 200},
		{"xff", checkPath + "/x", "Authorization: Bearer " + key + "\r\nOrigin: https://app.example.com\r\nX-Forwarded-For: \xff\xfe\r\n", 200},
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

// A relist (after a watch expired) replaces the whole index: a record deleted
// while no watch was open must stop working, and its quota is dropped.
func TestRecordStoreReplaceDropsVanishedRecords(t *testing.T) {
	idx, lim := index.New(), NewMemoryLimiter()
	st := &recordStore{synced: make(chan struct{}), l: &loader{idx: idx, limiter: lim,
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"}), log: logr.Discard()}}
	kept, gone := newKey(t, "production"), newKey(t, "production")
	a := recordSecret(t, "meterr-system", newRecord("a", standard(), kept))
	b := recordSecret(t, "meterr-system", newRecord("b", standard(), gone))
	if err := st.Replace([]any{a, b}, "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.synced:
	default:
		t.Fatal("the first full list did not mark the store synced")
	}
	now := time.Now()
	if _, _, ok := lim.Take(context.Background(), "uid-b", 1, now); !ok {
		t.Fatal("spending b's quota failed")
	}
	if err := st.Replace([]any{a}, "2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Lookup(apikey.HashOf(kept)); !ok {
		t.Fatal("a record still listed was dropped")
	}
	if _, ok := idx.Lookup(apikey.HashOf(gone)); ok {
		t.Fatal("a record missing from the relist is still accepted")
	}
	if remaining, _ := lim.Peek(context.Background(), "uid-b", 1, now); remaining != 1 {
		t.Fatal("the vanished record's quota was kept")
	}
}

// The initial list (or a relist) streams through the reflector's temporary
// store, which applies the store's transformer: each record is installed as
// it arrives and the store keeps only its name; a record that cannot be read
// fails closed at once; Replace then drops the records the list lacks.
func TestRecordStoreStreamedList(t *testing.T) {
	idx, lim := index.New(), NewMemoryLimiter()
	st := &recordStore{synced: make(chan struct{}), l: &loader{idx: idx, limiter: lim,
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"}), log: logr.Discard()}}
	good, bad, gone := newKey(t, "production"), newKey(t, "production"), newKey(t, "production")
	a := recordSecret(t, "meterr-system", newRecord("a", standard(), good))
	b := recordSecret(t, "meterr-system", newRecord("b", standard(), bad))
	c := recordSecret(t, "meterr-system", newRecord("c", standard(), gone))
	if err := st.Replace([]any{b, c}, "1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Lookup(apikey.HashOf(bad)); !ok {
		t.Fatal("b not loaded")
	}
	b.Data[record.DataKey] = []byte("{not json")

	tmp := cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.WithTransformer(st.Transformer()))
	for _, s := range []*corev1.Secret{a, b} {
		if err := tmp.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	if e, ok := idx.Lookup(apikey.HashOf(good)); !ok || e.Policy.Owner() != "team-a/a" || e.KeyID != apikey.HashOf(good).ID() {
		t.Fatalf("a streamed record is not installed as it arrives: %+v %v", e, ok)
	}
	if _, ok := idx.Lookup(apikey.HashOf(bad)); ok {
		t.Fatal("a record that no longer decodes is still accepted")
	}
	for _, obj := range tmp.List() {
		if _, ok := obj.(*streamedRecord); !ok {
			t.Fatalf("the temporary store kept a %T, not just the name", obj)
		}
	}
	if _, err := cache.MetaNamespaceKeyFunc(tmp.List()[0]); err != nil {
		t.Fatal(err)
	}
	if err := st.Replace(tmp.List(), "2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Lookup(apikey.HashOf(good)); !ok {
		t.Fatal("a dropped by Replace")
	}
	if _, ok := idx.Lookup(apikey.HashOf(gone)); ok {
		t.Fatal("c, missing from the relist, is still accepted")
	}
}

// Two record Secrets claim one key hash: the loader keeps it with the
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
		load func(st *recordStore) error
	}{
		{"events, first claimant first", func(st *recordStore) error { _ = st.Add(early); return st.Add(late) }},
		{"events, first claimant last", func(st *recordStore) error { _ = st.Add(late); return st.Add(early) }},
		{"relist", func(st *recordStore) error { return st.Replace([]any{late, early}, "1") }},
		{"relist, other order", func(st *recordStore) error { return st.Replace([]any{early, late}, "1") }},
		{"relist after events", func(st *recordStore) error {
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
			st := &recordStore{synced: make(chan struct{}), l: &loader{idx: idx, limiter: NewMemoryLimiter(),
				errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"}), log: log}}
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
