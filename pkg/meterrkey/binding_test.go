package meterrkey

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// site is a test server reached under host names of our choosing (a.example.com,
// b.example.com: the httptest certificate covers *.example.com). It records
// what every request carried; GET /go?to=URL answers 302 to URL.
type site struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []hit
}

type hit struct {
	host, path, auth string
}

func newSite(t *testing.T, tlsOn bool) *site {
	s := &site{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.got = append(s.got, hit{r.Host, r.URL.Path, r.Header.Get("Authorization")})
		s.mu.Unlock()
		if to := r.URL.Query().Get("to"); r.URL.Path == "/go" && to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"code":"expired_api_key"}}`)
			return
		}
		fmt.Fprint(w, "ok")
	})
	if tlsOn {
		s.srv = httptest.NewTLSServer(h)
	} else {
		s.srv = httptest.NewServer(h)
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *site) hits() []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hit(nil), s.got...)
}

// net maps "host:port" to the test servers' listeners, so redirects can name
// other hosts and default ports; any other address fails to dial.
type fakeNet struct {
	addrs map[string]string
	roots *x509.CertPool
}

func newFakeNet() *fakeNet { return &fakeNet{addrs: map[string]string{}, roots: x509.NewCertPool()} }

// add makes hostport reach s.
func (n *fakeNet) add(hostport string, s *site) {
	n.addrs[hostport] = s.srv.Listener.Addr().String()
	if c := s.srv.Certificate(); c != nil {
		n.roots.AddCert(c)
	}
}

func (n *fakeNet) transport(t *testing.T) *http.Transport {
	d := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			to, ok := n.addrs[strings.ToLower(addr)]
			if !ok {
				return nil, fmt.Errorf("test network: no host %s", addr)
			}
			return d.DialContext(ctx, network, to)
		},
		TLSClientConfig: &tls.Config{RootCAs: n.roots, MinVersion: tls.VersionTLS12},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func bound(s *Source, base http.RoundTripper, origins ...string) *Transport {
	return &Transport{Source: s, Base: base, Origins: origins}
}

// carries reports whether an Authorization header holds key (the key is
// never printed).
func carries(auth, key string) bool { return strings.Contains(auth, key) }

func TestTransportSendsTheKeyOnlyToItsOrigin(t *testing.T) {
	v := newVolume(t)
	key := newKey(t)
	v.put(key)
	src := open(t, Options{Path: v.path(), NoWatch: true, Resync: -1})

	a := newSite(t, true)       // https://a.example.com (port 443 and 8443)
	aPlain := newSite(t, false) // http://a.example.com (port 80)
	b := newSite(t, true)       // https://b.example.com
	sub := newSite(t, true)     // https://sub.example.com
	n := newFakeNet()
	n.add("a.example.com:443", a)
	n.add("a.example.com:8443", a)
	n.add("a.example.com:80", aPlain)
	n.add("b.example.com:443", b)
	n.add("example.com:443", a)
	n.add("sub.example.com:443", sub)

	type want struct {
		site    *site
		path    string
		withKey bool
	}
	for _, tc := range []struct {
		name    string
		origins []string
		url     string
		auth    string // the caller's own Authorization header
		hops    []want
	}{
		{
			name: "same-host redirect keeps the key", origins: []string{"https://a.example.com"},
			url:  "https://a.example.com/go?to=/final",
			hops: []want{{a, "/go", true}, {a, "/final", true}},
		},
		{
			name: "cross-host redirect drops the key", origins: []string{"https://a.example.com"},
			url:  "https://a.example.com/go?to=https://b.example.com/stolen",
			hops: []want{{a, "/go", true}, {b, "/stolen", false}},
		},
		{
			name: "redirect to a subdomain drops the key", origins: []string{"https://example.com"},
			url:  "https://example.com/go?to=https://sub.example.com/stolen",
			hops: []want{{a, "/go", true}, {sub, "/stolen", false}},
		},
		{
			name: "https to http on the same host drops the key", origins: []string{"https://a.example.com"},
			url:  "https://a.example.com/go?to=http://a.example.com/plain",
			hops: []want{{a, "/go", true}, {aPlain, "/plain", false}},
		},
		{
			name: "redirect to another port drops the key", origins: []string{"https://a.example.com"},
			url:  "https://a.example.com/go?to=https://a.example.com:8443/other",
			hops: []want{{a, "/go", true}, {a, "/other", false}},
		},
		{
			name: "host case and default port do not matter", origins: []string{"https://A.Example.COM:443"},
			url:  "https://a.example.com/go?to=https://A.EXAMPLE.com:443/final",
			hops: []want{{a, "/go", true}, {a, "/final", true}},
		},
		{
			name: "a request made directly to another host gets no key", origins: []string{"https://a.example.com"},
			url:  "https://b.example.com/direct",
			hops: []want{{b, "/direct", false}},
		},
		{
			name: "a direct plain-http request to the bound host name gets no key", origins: []string{"https://a.example.com"},
			url:  "http://a.example.com/plain",
			hops: []want{{aPlain, "/plain", false}},
		},
		{
			name: "the second of two origins", origins: []string{"https://a.example.com", "https://b.example.com"},
			url:  "https://a.example.com/go?to=https://b.example.com/also",
			hops: []want{{a, "/go", true}, {b, "/also", true}},
		},
		{
			// The caller's own header for another host: passed through
			// untouched, and http.Client still strips it on the way
			// to a third host.
			name: "the caller's header to another host is left to http.Client", origins: []string{"https://a.example.com"},
			url: "https://b.example.com/go?to=https://a.example.com:8443/third", auth: "Basic Y2FsbGVyOnNlY3JldA==",
			hops: []want{{b, "/go", false}, {a, "/third", false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[*site]int{}
			for _, s := range []*site{a, aPlain, b, sub} {
				before[s] = len(s.hits())
			}
			c := &http.Client{Transport: bound(src, n.transport(t), tc.origins...)}
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			for i, w := range tc.hops {
				hs := w.site.hits()[before[w.site]:]
				var h *hit
				for j := range hs {
					if hs[j].path == w.path {
						h = &hs[j]
					}
				}
				if h == nil {
					t.Fatalf("hop %d to %s never arrived", i, w.path)
				}
				if got := carries(h.auth, key); got != w.withKey {
					t.Errorf("hop %d to %s (Host %s): carried the key = %v, want %v", i, w.path, h.host, got, w.withKey)
				}
				if i == 0 && tc.auth != "" && !w.withKey && h.auth != tc.auth {
					t.Errorf("hop %d: the caller's own Authorization header was not passed through untouched", i)
				}
				if i > 0 && tc.auth != "" && !w.withKey && h.auth != "" {
					t.Errorf("hop %d to another host: http.Client's stripping of Authorization was defeated", i)
				}
			}
		})
	}
}

// A 401 from a host the key is not bound to is none of the Transport's
// business: no re-read, no retry, no wait.
func TestTransportIgnoresRefusalsFromOtherHosts(t *testing.T) {
	v := newVolume(t)
	k1, k2 := newKey(t), newKey(t)
	v.put(k1)
	src := open(t, Options{Path: v.path(), NoWatch: true, Resync: -1})
	a, b := newSite(t, true), newSite(t, true)
	n := newFakeNet()
	n.add("a.example.com:443", a)
	n.add("b.example.com:443", b)
	v.put(k2) // a re-read would find it
	c := &http.Client{Transport: bound(src, n.transport(t), "https://a.example.com")}
	tr := c.Transport.(*Transport)
	tr.WaitForNewKey = 10e9
	resp, err := c.Get("https://b.example.com/refuse")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || len(b.hits()) != 1 {
		t.Fatalf("got %d after %d requests, want the one 401", resp.StatusCode, len(b.hits()))
	}
	if mustKey(t, src) != k1 {
		t.Fatal("another host's 401 made the Transport re-read the key")
	}
}

func TestTransportRequiresABinding(t *testing.T) {
	v := newVolume(t)
	v.put(newKey(t))
	src := open(t, Options{Path: v.path(), NoWatch: true, Resync: -1})
	for _, tc := range []struct {
		name    string
		origins []string
		want    error
	}{
		{"none", nil, ErrUnbound},
		{"empty", []string{""}, ErrOrigin},
		{"no scheme", []string{"api.meterr.ai"}, ErrOrigin},
		{"other scheme", []string{"ftp://api.meterr.ai"}, ErrOrigin},
		{"path", []string{"https://api.meterr.ai/v1"}, ErrOrigin},
		{"query", []string{"https://api.meterr.ai?x=1"}, ErrOrigin},
		{"user info", []string{"https://u:p@api.meterr.ai"}, ErrOrigin},
		{"no host", []string{"https://:443"}, ErrOrigin},
		{"bad port", []string{"https://api.meterr.ai:99999"}, ErrOrigin},
		{"one good, one bad", []string{"https://api.meterr.ai", "https//x"}, ErrOrigin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int32
			base := roundTripFunc(func(*http.Request) (*http.Response, error) { sent.Add(1); return nil, errors.New("unreachable") })
			closed := false
			body := &closeSpy{Reader: strings.NewReader("x"), closed: &closed}
			req, _ := http.NewRequest(http.MethodPost, "https://api.meterr.ai/v1/usage", body)
			_, err := bound(src, base, tc.origins...).RoundTrip(req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if sent.Load() != 0 || !closed {
				t.Fatal("sent the request, or left its body open")
			}
		})
	}
	// The binding is checked once; a valid one sends.
	var sent atomic.Int32
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	})
	tr := bound(src, base, "https://api.meterr.ai/")
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, "https://api.meterr.ai/v1/usage", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if sent.Load() != 3 {
		t.Fatalf("sent %d, want 3", sent.Load())
	}
}

// The pure rule: which requests get the key.
func TestOriginMatch(t *testing.T) {
	for _, tc := range []struct {
		origin, url, host string
		want              bool
	}{
		{"https://api.meterr.ai", "https://api.meterr.ai/v1", "", true},
		{"https://api.meterr.ai", "https://API.Meterr.AI/v1", "", true},
		{"https://api.meterr.ai", "https://api.meterr.ai:443/v1", "", true},
		{"https://api.meterr.ai:443", "https://api.meterr.ai/v1", "", true},
		{"HTTPS://api.meterr.ai", "https://api.meterr.ai/v1", "", true},
		{"https://api.meterr.ai", "HTTPS://api.meterr.ai/v1", "", true},
		{"https://api.meterr.ai", "http://api.meterr.ai/v1", "", false},
		{"https://api.meterr.ai", "http://api.meterr.ai:443/v1", "", false}, // the scheme alone differs
		{"https://api.meterr.ai", "https://api.meterr.ai:8443/v1", "", false},
		{"https://api.meterr.ai", "https://evil.example/v1", "", false},
		{"https://api.meterr.ai", "https://api.meterr.ai.evil.example/v1", "", false},
		{"https://api.meterr.ai", "https://sub.api.meterr.ai/v1", "", false},
		{"https://api.meterr.ai", "https://api.meterr.ai./v1", "", false}, // not the same name; no key (safe)
		{"https://api.meterr.ai", "https://api.meterr.\u212ai/v1", "", false},
		{"https://k.example", "https://\u212a.example/v1", "", false}, // the Kelvin sign folds to k in Unicode only
		{"http://auth.internal:8080", "http://auth.internal:8080/verify", "", true},
		{"http://auth.internal:8080", "http://auth.internal/verify", "", false},
		{"http://auth.internal", "http://auth.internal:80/verify", "", true},
		{"https://[::1]:8443", "https://[::1]:8443/v1", "", true},
		{"https://[::1]:8443", "https://[::2]:8443/v1", "", false},
		{"https://api.meterr.ai", "https://api.meterr.ai:0443/v1", "", true}, // the same port number
		// A Host header naming another host: a shared front end would
		// route the key there.
		{"https://api.meterr.ai", "https://api.meterr.ai/v1", "api.meterr.ai", true},
		{"https://api.meterr.ai", "https://api.meterr.ai/v1", "API.meterr.ai:443", true},
		{"https://api.meterr.ai", "https://api.meterr.ai/v1", "other.example", false},
		{"https://api.meterr.ai", "https://api.meterr.ai/v1", "api.meterr.ai:8443", false},
	} {
		o, err := parseOrigin(tc.origin)
		if err != nil {
			t.Fatalf("%s: %v", tc.origin, err)
		}
		req, err := http.NewRequest(http.MethodGet, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tc.host
		if got := o.matches(req); got != tc.want {
			t.Errorf("origin %s, request %s Host %q: %v, want %v", tc.origin, tc.url, tc.host, got, tc.want)
		}
	}
}

// asciiLower lowers ASCII letters only, as the binding compares hosts.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzOrigin: parsing any origin and matching any request never panics; an
// origin matches itself, never the other scheme on the same host and port,
// and never a request whose scheme, ASCII-lowered host or port (the
// scheme's default when absent) differs from its own.
func FuzzOrigin(f *testing.F) {
	for _, s := range [][2]string{
		{"https://api.meterr.ai", "https://api.meterr.ai/v1"},
		{"https://API.meterr.ai:443/", "http://api.meterr.ai:443/v1"},
		{"http://[::1]:8080", "http://[::1]:8080/verify"},
		{"https://k.example", "https://\u212a.example/"},
		{"https://a.example", "https://a.example.evil.example/"},
		{"https://a.example", "https://a.example:0443/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, o, target string) {
		org, err := parseOrigin(o)
		if err != nil {
			return
		}
		self, _ := http.NewRequest(http.MethodGet, org.scheme+"://"+net.JoinHostPort(org.host, org.port)+"/", nil)
		if self != nil && !org.matches(self) {
			t.Fatalf("origin %q does not match itself", o)
		}
		other := map[string]string{"https": "http", "http": "https"}[org.scheme]
		if r, _ := http.NewRequest(http.MethodGet, other+"://"+net.JoinHostPort(org.host, org.port)+"/", nil); r != nil && org.matches(r) {
			t.Fatalf("origin %q matches the other scheme", o)
		}
		req, err := http.NewRequest(http.MethodGet, target, nil)
		if err != nil || !org.matches(req) {
			return
		}
		port, ok := portOf(req.URL.Scheme, req.URL.Port())
		if asciiLower(req.URL.Scheme) != org.scheme || asciiLower(req.URL.Hostname()) != asciiLower(org.host) || !ok || port != org.port {
			t.Fatalf("origin %q matches %q", o, target)
		}
	})
}
