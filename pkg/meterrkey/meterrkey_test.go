package meterrkey

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meterr/meterr-operator/internal/apikey"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// volume reproduces the kubelet's atomic writer for a Secret volume
// (pkg/volume/util/atomic_writer.go): each update goes to a new timestamped
// directory "..2026_11_30_00_44_37.123456789", a "..data_tmp" symlink to it
// is renamed over "..data", the user-visible names are symlinks into
// "..data", and the previous directory is removed.
type volume struct {
	t   testing.TB
	dir string
}

func newVolume(t testing.TB) *volume {
	return &volume{t: t, dir: t.TempDir()}
}

func (v *volume) path() string { return filepath.Join(v.dir, "api-key") }

// update publishes a payload (file name -> content) atomically.
func (v *volume) update(files map[string]string) {
	v.t.Helper()
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	ts, err := os.MkdirTemp(v.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		v.t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
			v.t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		v.t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				v.t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			v.t.Fatal(err)
		}
	}
}

// put publishes a Secret holding key under both data keys.
func (v *volume) put(key string) { v.update(map[string]string{"api-key": key, "METERR_API_KEY": key}) }

func newKey(t testing.TB) string {
	t.Helper()
	k, err := apikey.Generate(apikey.EnvProduction)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// malformed returns values that must never be used as keys: a half-written
// file, a typo, a wrong prefix, nothing, garbage.
func malformed(t testing.TB) map[string]string {
	k := newKey(t)
	typo := []byte(k)
	typo[20] ^= 1
	return map[string]string{
		"half-written": k[:30],
		"typo":         string(typo),
		"prefix":       "mtr_prod_" + k[9:],
		"empty":        "",
		"extra":        k + "x",
		"two keys":     k + "\n" + newKey(t),
		"json":         `{"api-key":"` + k + `"}`,
	}
}

// recorder collects OnReload calls.
type recorder struct {
	mu    sync.Mutex
	ids   []string
	errs  []error
	calls int
}

func (r *recorder) hook(id string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.ids = append(r.ids, id)
	r.errs = append(r.errs, err)
}

func (r *recorder) snapshot() ([]string, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...), append([]error(nil), r.errs...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustKey(t *testing.T, s *Source) string {
	t.Helper()
	k, err := s.Key()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func open(t *testing.T, opts Options) *Source {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestUsesTheNewKeyAfterTheKubeletSwap(t *testing.T) {
	v := newVolume(t)
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	v.put(k1)
	var rec recorder
	// No periodic re-read: only the watcher can notice the swaps.
	s := open(t, Options{Path: v.path(), Resync: -1, OnReload: rec.hook})
	if mustKey(t, s) != k1 || s.KeyID() != apikey.HashOf(k1).ID() {
		t.Fatal("did not read the first key")
	}
	v.put(k2)
	eventually(t, "the second key", func() bool { return mustKey(t, s) == k2 })
	v.put(k3)
	eventually(t, "the third key", func() bool { return mustKey(t, s) == k3 })
	if s.KeyID() != apikey.HashOf(k3).ID() {
		t.Fatal("KeyID does not follow the key")
	}
	ids, errs := rec.snapshot()
	want := []string{apikey.HashOf(k1).ID(), apikey.HashOf(k2).ID(), apikey.HashOf(k3).ID()}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("OnReload ids = %v, want %v (only changes are reported)", ids, want)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatalf("OnReload reported %v", err)
		}
	}
}

func TestMalformedIsNeverUsedAndTheOldKeyKeepsServing(t *testing.T) {
	v := newVolume(t)
	k1, k2 := newKey(t), newKey(t)
	v.put(k1)
	var rec recorder
	s := open(t, Options{Path: v.path(), Resync: -1, OnReload: rec.hook})
	for name, bad := range malformed(t) {
		rec.mu.Lock()
		before := rec.calls
		rec.mu.Unlock()
		v.put(bad)
		eventually(t, "the error for "+name, func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return rec.calls > before
		})
		if got := mustKey(t, s); got != k1 {
			t.Fatalf("%s: a malformed file replaced the key", name)
		}
		ids, errs := rec.snapshot()
		last := errs[len(errs)-1]
		if !errors.Is(last, ErrMalformed) || ids[len(ids)-1] != apikey.HashOf(k1).ID() {
			t.Fatalf("%s: OnReload(%q, %v), want the old key's id and ErrMalformed", name, ids[len(ids)-1], last)
		}
		if bad != "" && strings.Contains(last.Error(), strings.TrimSpace(bad)) {
			t.Fatalf("%s: the error repeats the file's content", name)
		}
	}
	v.put(k2)
	eventually(t, "the valid new key", func() bool { return mustKey(t, s) == k2 })
}

// A file written in place (not the kubelet's way, but what a bind mount or a
// sidecar might do) is seen half-written first; that is never used.
func TestHalfWrittenFileInPlace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api-key")
	k1, k2 := newKey(t), newKey(t)
	if err := os.WriteFile(path, []byte(k1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var seen sync.Map
	s := open(t, Options{Path: path, Resync: -1, OnReload: func(id string, _ error) { seen.Store(id, true) }})
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(k2); i += 7 {
		if _, err := f.WriteString(k2[i:min(i+7, len(k2))]); err != nil {
			t.Fatal(err)
		}
		if got := mustKey(t, s); got != k1 && got != k2 {
			t.Fatal("a partial key was used")
		}
		time.Sleep(2 * time.Millisecond)
	}
	_ = f.Close()
	eventually(t, "the complete key", func() bool { return mustKey(t, s) == k2 })
	seen.Range(func(id, _ any) bool {
		if id != apikey.HashOf(k1).ID() && id != apikey.HashOf(k2).ID() {
			t.Errorf("OnReload saw key id %v, of neither key", id)
		}
		return true
	})
}

func TestEnvironmentFallback(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api-key")
	kEnv, kFile := newKey(t), newKey(t)
	t.Setenv("MTR_TEST_KEY", kEnv)

	// No file: the environment variable.
	s := open(t, Options{Path: path, Env: "MTR_TEST_KEY", Resync: -1, NoWatch: true})
	if mustKey(t, s) != kEnv {
		t.Fatal("did not fall back to the environment")
	}
	// The file appears: it wins.
	if err := os.WriteFile(path, []byte(kFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := s.Reload(); !changed || err != nil || mustKey(t, s) != kFile {
		t.Fatalf("Reload = %v, %v; the file's key was not used", changed, err)
	}
	// The file disappears: keep its key, do not go back to the older one in the environment.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(); !errors.Is(err, ErrFileRemoved) || mustKey(t, s) != kFile {
		t.Fatalf("after the file went: %v", err)
	}

	// A malformed environment variable is not used either.
	t.Setenv("MTR_TEST_KEY", kEnv[:40])
	if _, err := New(Options{Path: path, Env: "MTR_TEST_KEY"}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("New with a malformed variable: %v", err)
	}
	if _, err := New(Options{Path: path, Env: "-"}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("New with nothing: %v", err)
	}
	// A malformed file at start is an error, even with a good variable.
	t.Setenv("MTR_TEST_KEY", kEnv)
	if err := os.WriteFile(path, []byte(kFile[:20]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Path: path, Env: "MTR_TEST_KEY"}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("New with a malformed file: %v", err)
	}
}

// The periodic re-read finds a change the watcher does not report.
func TestResyncWithoutWatcher(t *testing.T) {
	v := newVolume(t)
	k1, k2 := newKey(t), newKey(t)
	v.put(k1)
	s := open(t, Options{Path: v.path(), NoWatch: true, Resync: 20 * time.Millisecond})
	v.put(k2)
	eventually(t, "the resync", func() bool { return mustKey(t, s) == k2 })
}

// The directory does not exist yet at start (the key comes from the
// environment); the resync starts watching it once it does.
func TestWatchesADirectoryThatAppearsLater(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "meterr")
	kEnv, k1, k2 := newKey(t), newKey(t), newKey(t)
	t.Setenv("MTR_TEST_KEY", kEnv)
	s := open(t, Options{Path: filepath.Join(dir, "api-key"), Env: "MTR_TEST_KEY", Resync: 20 * time.Millisecond})
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &volume{t: t, dir: dir}
	v.put(k1)
	eventually(t, "the first file", func() bool { return mustKey(t, s) == k1 })
	v.put(k2)
	eventually(t, "the second file", func() bool { return mustKey(t, s) == k2 })
}

// The key never reaches a hook, an error or the package's output.
func TestNeverExposesTheKey(t *testing.T) {
	v := newVolume(t)
	k1 := newKey(t)
	v.put(k1)
	var out bytes.Buffer
	s := open(t, Options{Path: v.path(), NoWatch: true, Resync: -1, OnReload: func(id string, err error) {
		fmt.Fprintln(&out, id, err)
	}})
	v.put(k1[:50])
	_, err := s.Reload()
	fmt.Fprintln(&out, err)
	if strings.Contains(out.String(), k1[9:30]) {
		t.Fatal("the key (or part of it) was reported")
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	v := newVolume(t)
	v.put(newKey(t))
	for _, opts := range []Options{
		{Path: v.path()},
		{Path: v.path(), Resync: time.Millisecond},
		{Path: v.path(), NoWatch: true},
		{Path: v.path(), NoWatch: true, Resync: -1},
		{Path: filepath.Join(v.dir, "missing", "api-key"), Env: "MTR_TEST_NONE"},
	} {
		if opts.Env != "" {
			t.Setenv(opts.Env, newKey(t))
		}
		for range 10 {
			s, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			v.put(newKey(t))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal("a second Close failed:", err)
			}
			if _, err := s.Key(); err != nil {
				t.Fatal("the key is gone after Close")
			}
			if _, err := s.Reload(); !errors.Is(err, ErrClosed) {
				t.Fatal("Reload after Close:", err)
			}
		}
	}
}

// authServer answers like the auth server: 200 for the keys in valid, 401
// expired_api_key for the keys in expired, 401 invalid_api_key otherwise. It
// records every request's Authorization header and body.
type authServer struct {
	*httptest.Server
	mu      sync.Mutex
	valid   map[string]bool
	expired map[string]bool
	auths   []string
	bodies  []string
}

func newAuthServer(t *testing.T) *authServer {
	a := &authServer{valid: map[string]bool{}, expired: map[string]bool{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := r.Header.Get("Authorization")
		a.mu.Lock()
		a.auths = append(a.auths, h)
		a.bodies = append(a.bodies, string(body))
		key, _ := strings.CutPrefix(h, "Bearer ")
		ok, exp := a.valid[key], a.expired[key]
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case ok:
			fmt.Fprintf(w, `{"valid":true,"key_id":%q}`, apikey.HashOf(key).ID())
		case exp:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"type":"authentication_error","message":"API key has expired","code":"expired_api_key"}}`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"type":"authentication_error","message":"Invalid API key provided","code":"invalid_api_key"}}`)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *authServer) set(valid, expired []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.valid, a.expired = map[string]bool{}, map[string]bool{}
	for _, k := range valid {
		a.valid[k] = true
	}
	for _, k := range expired {
		a.expired[k] = true
	}
}

func (a *authServer) seen() (auths, bodies []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.auths...), append([]string(nil), a.bodies...)
}

func client(t *testing.T, tr *Transport) *http.Client {
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	tr.Base = base
	return &http.Client{Transport: tr}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTransportSetsTheHeaderOnAClone(t *testing.T) {
	v := newVolume(t)
	k1 := newKey(t)
	v.put(k1)
	srv := newAuthServer(t)
	srv.set([]string{k1}, nil)
	c := client(t, &Transport{Source: open(t, Options{Path: v.path()}), Origins: []string{srv.URL}})
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Authorization", "Bearer caller's")
	req.Header.Set("X-Other", "1")
	before := fmt.Sprint(req.Header)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	readAll(t, resp)
	if fmt.Sprint(req.Header) != before {
		t.Fatal("the caller's request was modified")
	}
	auths, _ := srv.seen()
	if len(auths) != 1 || auths[0] != "Bearer "+k1 {
		t.Fatal("the request did not carry the key in place of the caller's header")
	}
}

func TestTransportRetriesOnceAfterExpiredWithTheNewKey(t *testing.T) {
	for _, code := range []string{"expired_api_key", "invalid_api_key"} {
		t.Run(code, func(t *testing.T) {
			v := newVolume(t)
			k1, k2 := newKey(t), newKey(t)
			v.put(k1)
			srv := newAuthServer(t)
			var rec recorder
			// Neither the watcher nor the resync: only the 401 reloads the key.
			s := open(t, Options{Path: v.path(), NoWatch: true, Resync: -1, OnReload: rec.hook})
			c := client(t, &Transport{Source: s, Origins: []string{srv.URL}})
			v.put(k2)
			if code == "expired_api_key" {
				srv.set([]string{k2}, []string{k1})
			} else {
				srv.set([]string{k2}, nil)
			}
			body := `{"event":"usage","tokens":12}`
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body)) // sets GetBody
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(got, apikey.HashOf(k2).ID()) {
				t.Fatalf("status %d %s, want 200 with the new key", resp.StatusCode, got)
			}
			auths, bodies := srv.seen()
			if fmt.Sprint(auths) != fmt.Sprint([]string{"Bearer " + k1, "Bearer " + k2}) {
				t.Fatalf("sent %d requests, want the old key then the new key", len(auths))
			}
			if bodies[0] != body || bodies[1] != body {
				t.Fatalf("bodies %q, want the same body twice", bodies)
			}
			if ids, _ := rec.snapshot(); fmt.Sprint(ids) != fmt.Sprint([]string{apikey.HashOf(k1).ID(), apikey.HashOf(k2).ID()}) {
				t.Fatalf("OnReload ids %v", ids)
			}
		})
	}
}

func TestTransportDoesNotRetry(t *testing.T) {
	v := newVolume(t)
	k1, k2 := newKey(t), newKey(t)
	v.put(k1)
	srv := newAuthServer(t)
	s := open(t, Options{Path: v.path(), NoWatch: true, Resync: -1})
	// Bound to both servers, so the unrelated 401 below is the Transport's to judge.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"something_else"}}`)
	}))
	defer other.Close()
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL, other.URL}})
	expectOne := func(name string, req *http.Request, wantCode string) {
		t.Helper()
		before, _ := srv.seen()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, resp)
		after, _ := srv.seen()
		if len(after)-len(before) != 1 {
			t.Fatalf("%s: %d requests sent, want 1", name, len(after)-len(before))
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(got, `"code":"`+wantCode+`"`) {
			t.Fatalf("%s: got %d %q, want the 401 and its body intact", name, resp.StatusCode, got)
		}
	}

	// The key did not change: the same request would fail again.
	srv.set(nil, []string{k1})
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	expectOne("unchanged key", req, "expired_api_key")

	// The key changed, but the body cannot be sent again.
	v.put(k2)
	srv.set([]string{k2}, []string{k1})
	req, _ = http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("once")))
	if req.GetBody != nil {
		t.Fatal("test bug: the body is replayable")
	}
	expectOne("non-replayable body", req, "expired_api_key")
	if mustKey(t, s) != k2 {
		t.Fatal("the 401 did not reload the key for the next request")
	}

	// Not a key problem: a 401 with another code, or none.
	req, _ = http.NewRequest(http.MethodGet, other.URL, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != http.StatusUnauthorized || got != `{"error":{"code":"something_else"}}` {
		t.Fatalf("got %d %q", resp.StatusCode, got)
	}
	v.put(newKey(t))
	resp, err = c.Do(req.Clone(req.Context()))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if mustKey(t, s) != k2 {
		t.Fatal("an unrelated 401 reloaded the key")
	}
}

// WaitForNewKey holds a refused request until the new key arrives.
func TestTransportWaitsForTheNewKey(t *testing.T) {
	v := newVolume(t)
	k1, k2 := newKey(t), newKey(t)
	v.put(k1)
	srv := newAuthServer(t)
	srv.set([]string{k2}, []string{k1}) // rotated with overlap 0s; the volume is not updated yet
	s := open(t, Options{Path: v.path(), Resync: -1})
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: 10 * time.Second})
	go func() {
		time.Sleep(100 * time.Millisecond)
		v.put(k2)
	}()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %q", resp.StatusCode, got)
	}
	auths, _ := srv.seen()
	if len(auths) != 2 {
		t.Fatalf("%d requests, want 2", len(auths))
	}

	// Bounded by WaitForNewKey: no new key, the 401 is returned.
	srv.set(nil, []string{k2})
	c = client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: 50 * time.Millisecond})
	start := time.Now()
	resp, err = c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || time.Since(start) > 5*time.Second {
		t.Fatalf("got %d after %s", resp.StatusCode, time.Since(start))
	}
}

func TestTransportWithoutAKeySendsNothing(t *testing.T) {
	s := &Source{} // never loaded
	var sent atomic.Int32
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { sent.Add(1); return nil, errors.New("unreachable") })
	closed := false
	body := &closeSpy{Reader: strings.NewReader("x"), closed: &closed}
	req, _ := http.NewRequest(http.MethodPost, "http://example.invalid/", body)
	if _, err := (&Transport{Source: s, Base: base, Origins: []string{"http://example.invalid"}}).RoundTrip(req); !errors.Is(err, ErrNoKey) {
		t.Fatalf("err = %v", err)
	}
	if sent.Load() != 0 || !closed {
		t.Fatal("sent a request without a key, or left the body open")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type closeSpy struct {
	io.Reader
	closed *bool
}

func (c *closeSpy) Close() error { *c.closed = true; return nil }

// Many requests while the kubelet swaps the volume again and again, with
// malformed payloads in between: every request carries one of the valid keys,
// whole, and every request succeeds (at most one retry each). Once with the
// watcher, once with nothing but the 401s to reload the key (every stale
// request is retried).
//
// The swaps are paced by the requests, not by the clock: the next swap waits
// until every worker has finished a request it began after the last one, so
// no request (nor its retry) spans more than one swap however slow the
// machine, and the server's overlap of two keys before the newest always
// covers a retry's fresh key.
func TestConcurrentRequestsDuringSwaps(t *testing.T) {
	t.Run("watcher", func(t *testing.T) {
		concurrentSwaps(t, Options{Resync: 5 * time.Millisecond})
	})
	t.Run("401 only", func(t *testing.T) {
		concurrentSwaps(t, Options{NoWatch: true, Resync: -1})
	})
}

func concurrentSwaps(t *testing.T, opts Options) {
	v := newVolume(t)
	keys := []string{newKey(t)}
	v.put(keys[0])
	srv := newAuthServer(t)
	opts.Path = v.path()
	s := open(t, opts)
	c := client(t, &Transport{Source: s, Origins: []string{srv.URL}, WaitForNewKey: 5 * time.Second})

	var valid sync.Map // every key ever published whole
	valid.Store(keys[0], true)
	srv.set(keys, nil)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures atomic.Int64
	// swaps counts the swaps made; finished[w] is the count when worker w
	// began the last request it finished.
	var swaps atomic.Int64
	const workers = 8
	var finished [workers]atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := swaps.Load()
				req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader([]byte("payload")))
				resp, err := c.Do(req)
				if err != nil {
					failures.Add(1)
					t.Logf("request failed: %v", err)
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					requests.Add(1)
					if resp.StatusCode != http.StatusOK {
						failures.Add(1)
						t.Logf("request failed: %d %s", resp.StatusCode, b)
					}
				}
				finished[w].Store(began)
			}
		})
	}
	// settle waits until every worker has finished a request begun after
	// the latest swap.
	settle := func() {
		n := swaps.Load()
		for w := range workers {
			for finished[w].Load() < n {
				select {
				case <-time.After(time.Millisecond):
				case <-t.Context().Done():
					return
				}
			}
		}
	}
	bad := malformed(t)
	for i := range 40 {
		k := newKey(t)
		valid.Store(k, true)
		// The new key and the two before it are accepted (an overlap:
		// a request and its retry may each span a swap on a slow
		// machine), older ones are expired: a request with a stale key
		// is refused and retried.
		cut := max(0, len(keys)-2)
		settle()
		srv.set(append([]string{k}, keys[cut:]...), keys[:cut])
		swaps.Add(1)
		keys = append(keys, k)
		for _, b := range bad {
			if i%4 == 0 {
				v.put(b)
			}
		}
		v.put(k)
	}
	settle()
	close(stop)
	wg.Wait()

	auths, bodies := srv.seen()
	if requests.Load() < 100 {
		t.Fatalf("only %d requests completed", requests.Load())
	}
	for i, h := range auths {
		key, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || apikey.Parse(key) != nil {
			t.Fatalf("request %d carried an empty or corrupt Authorization header", i)
		}
		if _, ok := valid.Load(key); !ok {
			t.Fatalf("request %d carried a key that was never published whole", i)
		}
		if bodies[i] != "payload" {
			t.Fatalf("request %d had body %q", i, bodies[i])
		}
	}
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failures.Load(), requests.Load())
	}
	if !opts.NoWatch {
		eventually(t, "the watcher to end on the last key", func() bool { return mustKey(t, s) == keys[len(keys)-1] })
	}
	t.Logf("%d requests, %d sent (retries: %d), %d swaps", requests.Load(), len(auths), len(auths)-int(requests.Load()), len(keys)-1)
}
