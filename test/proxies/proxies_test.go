// Package proxies runs the shipped NGINX and Caddy configurations
// (docs/integrations/nginx/nginx.conf, docs/integrations/caddy/Caddyfile) with
// the real nginx and caddy binaries in front of a tiny upstream, with the auth
// server in-process, and checks what a client and the upstream see.
//
// Without nginx or caddy on PATH the tests skip, unless MTR_REQUIRE_PROXIES=1
// (hack/test.sh sets it and installs both): then they fail.
package proxies

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/keepalive"
)

// keys are the keys the auth server knows, by what they are for.
type keys struct {
	valid, readOnly, limited, ipLocal, ipForged string
}

// limitedPerHour is the hourly limit of keys.limited.
const limitedPerHour = 2

func newKey(t *testing.T) string {
	t.Helper()
	k, err := apikey.Generate("production")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startAuth runs the auth server behind an httptest server: it trusts
// loopback (the proxies), and POST /v1/usage needs write. As in the auth
// server, a keep-alive connection is taken over after its first request
// (--keepalive-takeover); ka counts those.
func startAuth(t *testing.T) (addr string, k keys, ka *keepalive.Server) {
	t.Helper()
	return startAuthReady(t, true)
}

// startAuthReady is startAuth; with ready false the auth server has not
// loaded its records yet and answers every check 503 not_ready.
func startAuthReady(t *testing.T, ready bool) (addr string, k keys, ka *keepalive.Server) {
	t.Helper()
	return startAuthWith(t, ready, nil)
}

// startAuthWith is startAuthReady with the server's configuration changed
// by mut.
func startAuthWith(t *testing.T, ready bool, mut func(*webhookserver.ServerConfig)) (addr string, k keys, ka *keepalive.Server) {
	t.Helper()
	idx := index.New()
	add := func(name string, perms []string, limit int64, allow []string) string {
		key := newKey(t)
		r := &record.Record{
			FormatVersion: record.FormatVersion,
			Owner:         record.Owner{Namespace: "team-a", Name: name, UID: types.UID("uid-" + name)},
			Policy:        record.Policy{Permissions: perms, Environment: "production", RequestsPerHour: limit, IPAllowlist: allow},
			Keys:          []record.Version{record.NewVersion(key, time.Now().Add(-time.Hour))},
		}
		if err := idx.Upsert("rec-"+name, r, time.Now()); err != nil {
			t.Fatal(err)
		}
		return key
	}
	k = keys{
		valid:    add("web", []string{"read", "write"}, 1000, nil),
		readOnly: add("ro", []string{"read"}, 1000, nil),
		limited:  add("limited", []string{"read", "write"}, limitedPerHour, nil),
		ipLocal:  add("ip-local", []string{"read"}, 1000, []string{"127.0.0.1"}),
		ipForged: add("ip-forged", []string{"read"}, 1000, []string{"203.0.113.9"}),
	}
	cfg := webhookserver.ServerConfig{
		Index:          idx,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")},
		Routes:         []webhookserver.Route{{Method: "*", Prefix: "/v1/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}},
		Registerer:     prometheus.NewRegistry(),
	}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := webhookserver.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReady(ready)
	ka = keepalive.New(keepalive.Config{Handler: srv, MaxHeaderBytes: webhookserver.DefaultMaxHeaderBytes,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, WriteTimeout: 10 * time.Second})
	ts := httptest.NewServer(ka.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(ka.Close)
	return ts.Listener.Addr().String(), k, ka
}

// startUpstream answers every request with the request's headers as JSON.
func startUpstream(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "headers": r.Header})
	}))
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// render reads a shipped file and substitutes the three placeholders as
// envsubst '${METERR_AUTH} ${UPSTREAM} ${LISTEN}' does: those names only,
// as $NAME or ${NAME}; every other $ is left alone.
func render(t *testing.T, path string, vars map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for k, v := range vars {
		pairs = append(pairs, "${"+k+"}", v)
	}
	s := strings.NewReplacer(pairs...).Replace(string(raw))
	for k, v := range vars {
		s = replaceBareVar(s, k, v)
	}
	return s
}

// replaceBareVar replaces $NAME not followed by a name character.
func replaceBareVar(s, name, v string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "$"+name)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + 1 + len(name)
		if end < len(s) && (s[end] == '_' || s[end] >= 'A' && s[end] <= 'Z' || s[end] >= 'a' && s[end] <= 'z' || s[end] >= '0' && s[end] <= '9') {
			b.WriteString(s[:end])
			s = s[end:]
			continue
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[end:]
	}
}

func need(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("MTR_REQUIRE_PROXIES") == "1" {
			t.Fatalf("%s is not installed and MTR_REQUIRE_PROXIES=1 (apt-get install -y nginx caddy; hack/test.sh does)", bin)
		}
		t.Skipf("%s is not installed: skipping (apt-get install -y nginx caddy; MTR_REQUIRE_PROXIES=1 makes this a failure)", bin)
	}
	return p
}

// start runs cmd until the test ends and waits for it to accept connections
// on port.
func start(t *testing.T, cmd *exec.Cmd, port string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", filepath.Base(cmd.Path), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %s", filepath.Base(cmd.Path), port, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNginx(t *testing.T) {
	auth, k, ka := startAuth(t)
	base := startNginx(t, auth, startUpstream(t))
	exercise(t, base, k, true)
	// The guide keeps HTTP/1.1 connections to the auth server (keepalive,
	// proxy_http_version 1.1): they are taken over after their first
	// request.
	if ka.TakenOver() == 0 {
		t.Error("NGINX's connections to the auth server were never taken over")
	}
}

// startNginx runs the shipped nginx.conf in front of upstream, asking the
// auth server at auth, and returns its base URL.
func startNginx(t *testing.T, auth, upstream string) string {
	t.Helper()
	bin := need(t, "nginx")
	port := freePort(t)
	dir := t.TempDir()
	// Workers may run as another user when the test runs as root.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	text := render(t, "../../docs/integrations/nginx/nginx.conf", map[string]string{"METERR_AUTH": auth, "UPSTREAM": upstream, "LISTEN": "127.0.0.1:" + port})
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir+"/", "-c", conf, "-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+"; error_log stderr;")
	start(t, cmd, port)
	return "http://127.0.0.1:" + port
}

func TestCaddy(t *testing.T) {
	auth, k, ka := startAuth(t)
	base := startCaddy(t, auth, startUpstream(t))
	exercise(t, base, k, false)
	// Caddy keeps its connections to the auth server: most of the
	// answers above came from connections taken over.
	if ka.TakenOver() == 0 {
		t.Error("Caddy's connections to the auth server were never taken over")
	}
}

// startCaddy runs the shipped Caddyfile in front of upstream, asking the
// auth server at auth, and returns its base URL.
func startCaddy(t *testing.T, auth, upstream string) string {
	t.Helper()
	bin := need(t, "caddy")
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "Caddyfile")
	text := render(t, "../../docs/integrations/caddy/Caddyfile", map[string]string{"METERR_AUTH": auth, "UPSTREAM": upstream, "LISTEN": port})
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	start(t, cmd, port)
	return "http://127.0.0.1:" + port
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, key string, hdr map[string]string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, body}
}

// upstreamSaw returns the headers the upstream echoed.
func upstreamSaw(t *testing.T, a answer) http.Header {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d, want the upstream's 200: %s", a.status, a.body)
	}
	var echo struct {
		Headers http.Header `json:"headers"`
	}
	if err := json.Unmarshal(a.body, &echo); err != nil || echo.Headers == nil {
		t.Fatalf("not the upstream's echo: %s", a.body)
	}
	return echo.Headers
}

// wantError checks a refusal: status, the seed's error JSON with code, JSON
// content type.
func wantError(t *testing.T, what string, a answer, status int, code string) {
	t.Helper()
	var body struct {
		Error struct{ Type, Message, Code string } `json:"error"`
	}
	if err := json.Unmarshal(a.body, &body); err != nil {
		t.Errorf("%s: body is not JSON: %v: %q", what, err, a.body)
		return
	}
	if a.status != status || body.Error.Code != code || body.Error.Type == "" || body.Error.Message == "" {
		t.Errorf("%s: %d %s, want %d %s", what, a.status, a.body, status, code)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
}

// exercise checks a proxy at base. rateLimitToClient: the proxy passes the
// rate-limit headers of an allowed request on to the client.
func exercise(t *testing.T, base string, k keys, rateLimitToClient bool) {
	t.Run("valid key", func(t *testing.T) {
		a := do(t, "GET", base+"/v1/things?x=1", k.valid, map[string]string{
			"X-Meterr-Key-Id": "forged", "X-Forwarded-For": "198.51.100.1"})
		h := upstreamSaw(t, a)
		if got := h.Get("Authorization"); got != "" {
			t.Errorf("the upstream saw Authorization %q", got)
		}
		if got, want := h.Values("X-Meterr-Key-Id"), apikey.HashOf(k.valid).ID(); len(got) != 1 || got[0] != want {
			t.Errorf("X-Meterr-Key-Id %q, want [%s]", got, want)
		}
		for name, want := range map[string]string{"X-Meterr-Key-Name": "team-a/web", "X-Meterr-Permissions": "read,write", "X-Meterr-Environment": "production"} {
			if got := h.Get(name); got != want {
				t.Errorf("%s %q, want %q", name, got, want)
			}
		}
		if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("the upstream saw X-Forwarded-For %q, want [127.0.0.1] (overwritten, not appended)", got)
		}
		// Caddy's forward_auth copies headers to the request only.
		if rateLimitToClient && a.header.Get("X-RateLimit-Limit") != "1000" {
			t.Errorf("the client did not get the rate-limit headers: %v", a.header)
		}
	})
	t.Run("no key", func(t *testing.T) {
		a := do(t, "GET", base+"/v1/things", "", nil)
		wantError(t, "no key", a, http.StatusUnauthorized, "invalid_api_key")
		if got := a.header.Values("Www-Authenticate"); len(got) != 1 || got[0] != "Bearer" {
			t.Errorf("WWW-Authenticate %q, want [Bearer]", got)
		}
	})
	t.Run("read-only key on a write route", func(t *testing.T) {
		wantError(t, "POST /v1/usage", do(t, "POST", base+"/v1/usage", k.readOnly, nil), http.StatusForbidden, "insufficient_permissions")
		upstreamSaw(t, do(t, "GET", base+"/v1/usage", k.readOnly, nil))
	})
	t.Run("over the limit", func(t *testing.T) {
		for i := 0; i < limitedPerHour; i++ {
			upstreamSaw(t, do(t, "GET", base+"/v1/things", k.limited, nil))
		}
		a := do(t, "GET", base+"/v1/things", k.limited, nil)
		wantError(t, "over the limit", a, http.StatusTooManyRequests, "rate_limit_exceeded")
		if ra := a.header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Errorf("Retry-After %q", ra)
		}
		if a.header.Get("X-RateLimit-Remaining") != "0" {
			t.Errorf("X-RateLimit-Remaining %q", a.header.Get("X-RateLimit-Remaining"))
		}
	})
	t.Run("client IP", func(t *testing.T) {
		upstreamSaw(t, do(t, "GET", base+"/v1/things", k.ipLocal, nil))
		upstreamSaw(t, do(t, "GET", base+"/v1/things", k.ipLocal, map[string]string{"X-Forwarded-For": "203.0.113.9"}))
		a := do(t, "GET", base+"/v1/things", k.ipForged, map[string]string{"X-Forwarded-For": "203.0.113.9"})
		wantError(t, "forged X-Forwarded-For", a, http.StatusForbidden, "ip_not_allowed")
		if !bytes.Contains(a.body, []byte("127.0.0.1")) {
			t.Errorf("the refusal does not name the address the proxy saw: %s", a.body)
		}
	})
	t.Run("forged original request", func(t *testing.T) {
		// A client's own description of the request cannot lower what
		// it needs.
		a := do(t, "POST", base+"/v1/usage", k.readOnly, map[string]string{"X-Original-URI": "/public", "X-Forwarded-Uri": "/public", "X-Original-Method": "GET"})
		wantError(t, "forged description", a, http.StatusForbidden, "insufficient_permissions")
	})
}
