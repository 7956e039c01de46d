package intake

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// fakeRevoker knows a set of keys; revoking one twice says AlreadyRevoked.
type fakeRevoker struct {
	mu      sync.Mutex
	ours    map[string]bool // key -> revoked
	calls   int
	sources []string
	where   []string
}

func (f *fakeRevoker) Revoke(_ context.Context, source string, reports []Report) ([]Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	out := make([]Outcome, len(reports))
	for i, r := range reports {
		revoked, ok := f.ours[r.Token]
		switch {
		case !ok:
			out[i] = NotOurs
		case revoked:
			out[i] = AlreadyRevoked
		default:
			f.ours[r.Token] = true
			out[i] = Revoked
			f.sources = append(f.sources, source)
			f.where = append(f.where, r.Location)
		}
	}
	return out, nil
}

func newKeys(t testing.TB, n int) []string {
	out := make([]string, n)
	for i := range out {
		k, err := apikey.Generate("production")
		if err != nil {
			t.Fatal(err)
		}
		out[i] = k
	}
	return out
}

const gitlabSecret = "s3cr3t-shared-with-gitlab"

func newServer(t *testing.T, rev Revoker, mutate ...func(*Options)) *httptest.Server {
	t.Helper()
	o := Options{Revoker: rev, GitLabToken: func() ([]byte, error) { return []byte(gitlabSecret + "\n"), nil }, Log: logr.Discard()}
	for _, m := range mutate {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

// gitlabClient behaves as GitLab's TokenRevocationService does: the
// pre-shared token as the whole Authorization header, JSON both ways, the
// types fetched first and the findings filtered to them.
type gitlabClient struct {
	base, token string
}

func (c gitlabClient) do(t *testing.T, method, path string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

type finding struct {
	Type     string `json:"type"`
	Token    string `json:"token"`
	Location string `json:"location"`
}

// revoke sends the findings GitLab's secret detection made, as GitLab does.
func (c gitlabClient) revoke(t *testing.T, findings []finding) int {
	t.Helper()
	resp, raw := c.do(t, http.MethodGet, PathGitLabTypes, nil)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode
	}
	var types struct {
		Types []string `json:"types"`
	}
	if err := json.Unmarshal(raw, &types); err != nil {
		t.Fatalf("revocable_token_types: %v", err)
	}
	var keep []finding
	for _, f := range findings {
		for _, ty := range types.Types {
			if f.Type == ty {
				keep = append(keep, f)
			}
		}
	}
	if len(keep) == 0 {
		return 0
	}
	body, _ := json.Marshal(keep)
	resp, _ = c.do(t, http.MethodPost, PathGitLabRevoke, body)
	return resp.StatusCode
}

func TestGitLab(t *testing.T) {
	keys := newKeys(t, 3)
	rev := &fakeRevoker{ours: map[string]bool{keys[0]: false, keys[1]: false}}
	ts := newServer(t, rev)
	gl := gitlabClient{base: ts.URL, token: gitlabSecret}

	resp, raw := gl.do(t, http.MethodGet, PathGitLabTypes, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"types":["`+GitLabTokenType+`"]`) ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("revocable_token_types: %d %s", resp.StatusCode, raw)
	}

	findings := []finding{
		{Type: GitLabTokenType, Token: keys[0], Location: "https://gitlab.example/g/p/-/blob/abc/app.env"},
		{Type: GitLabTokenType, Token: keys[2], Location: "https://gitlab.example/g/p/-/blob/abc/other.env"},
		{Type: "gitleaks_rule_id_gitlab_personal_access_token", Token: "glpat-xxxxxxxxxxxxxxxxxxxx", Location: "x"},
	}
	if got := gl.revoke(t, findings); got != http.StatusNoContent {
		t.Fatalf("revoke_tokens answered %d, want 204", got)
	}
	if !rev.ours[keys[0]] || rev.ours[keys[1]] || len(rev.where) != 1 || rev.where[0] != findings[0].Location || rev.sources[0] != "gitlab" {
		t.Fatalf("revoked the wrong keys: %v %v", rev.where, rev.sources)
	}
	// Idempotent: the same findings again are accepted again, nothing more is revoked.
	if got := gl.revoke(t, findings); got != http.StatusNoContent {
		t.Fatalf("a repeated revoke_tokens answered %d, want 204", got)
	}
	if len(rev.where) != 1 {
		t.Fatal("a repeated report revoked again")
	}

	t.Run("wrong or missing token: 401, nothing revoked", func(t *testing.T) {
		calls := rev.calls
		body, _ := json.Marshal([]finding{{Type: GitLabTokenType, Token: keys[1]}})
		for _, tok := range []string{"", "wrong", gitlabSecret + "x", "Basic " + gitlabSecret} {
			c := gitlabClient{base: ts.URL, token: tok}
			for _, p := range []string{PathGitLabTypes, PathGitLabRevoke} {
				m := http.MethodGet
				if p == PathGitLabRevoke {
					m = http.MethodPost
				}
				resp, raw := c.do(t, m, p, body)
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(raw), `"authentication_error"`) {
					t.Fatalf("%s with a bad token: %d %s", p, resp.StatusCode, raw)
				}
			}
		}
		if rev.calls != calls || rev.ours[keys[1]] {
			t.Fatal("an unauthenticated request revoked something")
		}
		// "Bearer <token>" is accepted too.
		resp, _ := gitlabClient{base: ts.URL, token: "Bearer " + gitlabSecret}.do(t, http.MethodGet, PathGitLabTypes, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Bearer form: %d", resp.StatusCode)
		}
	})

	t.Run("the documented errors: 405, 400 for a bad body or an unsupported type", func(t *testing.T) {
		resp, _ := gl.do(t, http.MethodPost, PathGitLabTypes, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("POST types: %d", resp.StatusCode)
		}
		resp, _ = gl.do(t, http.MethodGet, PathGitLabRevoke, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET revoke: %d", resp.StatusCode)
		}
		for _, body := range []string{`{`, `{"type":"x"}`, `[{"type":"other","token":"t"}]`, `[] []`} {
			resp, _ := gl.do(t, http.MethodPost, PathGitLabRevoke, []byte(body))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("body %q: %d, want 400", body, resp.StatusCode)
			}
		}
	})
}

func TestLimits(t *testing.T) {
	rev := &fakeRevoker{ours: map[string]bool{}}
	t.Run("body size", func(t *testing.T) {
		ts := newServer(t, rev, func(o *Options) { o.MaxBodyBytes = 1024 })
		big, _ := json.Marshal([]finding{{Type: GitLabTokenType, Token: strings.Repeat("a", 2000)}})
		resp, _ := gitlabClient{base: ts.URL, token: gitlabSecret}.do(t, http.MethodPost, PathGitLabRevoke, big)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("a large body: %d, want 413", resp.StatusCode)
		}
	})
	t.Run("tokens per request", func(t *testing.T) {
		ts := newServer(t, rev, func(o *Options) { o.MaxTokens = 2 })
		body, _ := json.Marshal(make([]finding, 3))
		resp, _ := gitlabClient{base: ts.URL, token: gitlabSecret}.do(t, http.MethodPost, PathGitLabRevoke, body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("too many tokens: %d, want 400", resp.StatusCode)
		}
	})
	t.Run("rate, counted before authentication", func(t *testing.T) {
		ts := newServer(t, rev, func(o *Options) { o.Rate, o.Burst = 0.001, 3 })
		bad := gitlabClient{base: ts.URL, token: "guess"}
		for range 3 {
			if resp, _ := bad.do(t, http.MethodGet, PathGitLabTypes, nil); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("within the burst: %d", resp.StatusCode)
			}
		}
		resp, _ := gitlabClient{base: ts.URL, token: gitlabSecret}.do(t, http.MethodGet, PathGitLabTypes, nil)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("past the burst: %d (Retry-After %q), want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("an intake not configured is not served", func(t *testing.T) {
		ts := newServer(t, rev, func(o *Options) { o.GitLabToken = nil })
		resp, _ := gitlabClient{base: ts.URL, token: gitlabSecret}.do(t, http.MethodGet, PathGitLabTypes, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GitLab intake off: %d", resp.StatusCode)
		}
		resp, _ = gitlabClient{base: ts.URL}.do(t, http.MethodPost, PathGitHub, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GitHub intake off: %d", resp.StatusCode)
		}
	})
}

// githubSigner signs as GitHub does, with a key pair generated here.
type githubSigner struct {
	id   string
	priv *ecdsa.PrivateKey
}

func newGitHubSigner(t testing.TB, id string) githubSigner {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return githubSigner{id: id, priv: priv}
}

func (s githubSigner) keyJSON(t testing.TB, current bool) map[string]any {
	der, err := x509.MarshalPKIXPublicKey(&s.priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"key_identifier": s.id, "is_current": current,
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

func (s githubSigner) sign(t testing.TB, body []byte) string {
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func postGitHub(t *testing.T, url string, body []byte, keyID, sig string) (int, []Feedback) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+PathGitHub, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if keyID != "" {
		req.Header.Set(HeaderGitHubKeyID, keyID)
	}
	if sig != "" {
		req.Header.Set(HeaderGitHubSignature, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fb []Feedback
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&fb); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, fb
}

func TestGitHub(t *testing.T) {
	current, older, stranger := newGitHubSigner(t, "k-current"), newGitHubSigner(t, "k-older"), newGitHubSigner(t, "k-stranger")
	doc, _ := json.Marshal(map[string]any{"public_keys": []any{current.keyJSON(t, true), older.keyJSON(t, false)}})
	keys, err := ParseGitHubKeys(doc)
	if err != nil {
		t.Fatal(err)
	}
	ours := newKeys(t, 50)
	rev := &fakeRevoker{ours: map[string]bool{}}
	for _, k := range ours {
		rev.ours[k] = false
	}
	ts := newServer(t, rev, func(o *Options) {
		o.GitLabToken = nil
		o.GitHubKeys = func() (map[string]PublicKey, error) { return keys, nil }
		o.Burst = 100
	})

	// A batch of 100: our 50 keys, 25 well-formed keys of nobody, 25 other tokens.
	others := newKeys(t, 25)
	var batch []map[string]string
	want := map[string]string{}
	for i := range 100 {
		var tok string
		label := "false_positive"
		switch {
		case i%2 == 0:
			tok, label = ours[i/2], "true_positive"
		case i%4 == 1:
			tok = others[i/4]
		default:
			tok = fmt.Sprintf("ghp_notoursnotours%04d", i)
		}
		batch = append(batch, map[string]string{"token": tok, "type": "meterr_api_key",
			"url": fmt.Sprintf("https://github.com/o/r/blob/main/f%d", i), "source": "content"})
		sum := sha256.Sum256([]byte(tok))
		want[hex.EncodeToString(sum[:])] = label
	}
	body, _ := json.Marshal(batch)

	t.Run("unsigned, tampered, unknown key id, wrong key: 401, nothing revoked", func(t *testing.T) {
		sig := current.sign(t, body)
		tampered := bytes.Replace(body, []byte("f0"), []byte("f9"), 1)
		cases := map[string][3]string{
			"unsigned":       {string(body), "", ""},
			"no signature":   {string(body), current.id, ""},
			"tampered body":  {string(tampered), current.id, sig},
			"unknown key id": {string(body), stranger.id, stranger.sign(t, body)},
			"wrong key":      {string(body), older.id, sig},
			"not base64":     {string(body), current.id, "%%%"},
		}
		for name, c := range cases {
			if code, _ := postGitHub(t, ts.URL, []byte(c[0]), c[1], c[2]); code != http.StatusUnauthorized {
				t.Errorf("%s: %d, want 401", name, code)
			}
		}
		if rev.calls != 0 {
			t.Fatal("an unauthenticated request reached the revoker")
		}
	})

	t.Run("a good signature: our keys revoked, the feedback array labels every token", func(t *testing.T) {
		code, fb := postGitHub(t, ts.URL, body, current.id, current.sign(t, body))
		if code != http.StatusOK || len(fb) != 100 {
			t.Fatalf("answered %d with %d entries", code, len(fb))
		}
		for i, f := range fb {
			if want[f.TokenHash] != f.Label || f.TokenType != "meterr_api_key" {
				t.Fatalf("feedback #%d: %+v, want label %q", i, f, want[f.TokenHash])
			}
		}
		for _, k := range ours {
			if !rev.ours[k] {
				t.Fatal("one of our keys was not revoked")
			}
		}
		if strings.Contains(fmt.Sprint(fb), ours[0]) {
			t.Fatal("the answer holds a token")
		}
		// Signed by the older key (GitHub keeps using it for a while), again: idempotent.
		code, fb = postGitHub(t, ts.URL, body, older.id, older.sign(t, body))
		if code != http.StatusOK || fb[0].Label != "true_positive" || len(rev.sources) != 50 {
			t.Fatalf("again: %d %+v (revocations %d)", code, fb[0], len(rev.sources))
		}
	})
}

func TestParseGitHubKeys(t *testing.T) {
	rsaLike := `{"public_keys":[{"key_identifier":"a","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}`
	for _, bad := range []string{``, `{}`, `{"public_keys":[]}`, `{"public_keys":[{"key":"x"}]}`, rsaLike} {
		if _, err := ParseGitHubKeys([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
