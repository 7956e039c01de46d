// Package clients holds the Node and Python recipes of docs/clients.md. Its
// test keeps the document and the files identical and runs the recipes under
// the real node and python3 (the end-to-end suite runs them against the real
// auth server across a rotation).
package clients

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/pkg/webhooksig"
)

// fileLink is the line that names the file a code block must equal:
// [docs/clients/node/meterr-key.mjs](clients/node/meterr-key.mjs)
var fileLink = regexp.MustCompile(`^\[[^\]]+\]\((clients/[^)]+)\)$`)

// TestDocumentEmbedsTheFiles: every code block in docs/clients.md that
// follows a link to a file under docs/clients is that file, byte for byte, and
// every recipe file is in the document.
func TestDocumentEmbedsTheFiles(t *testing.T) {
	doc, err := os.ReadFile("../clients.md")
	if err != nil {
		t.Fatal(err)
	}
	embedded := map[string]bool{}
	lines := strings.SplitAfter(string(doc), "\n")
	prev := ""
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\n")
		if !strings.HasPrefix(line, "```") {
			if strings.TrimSpace(line) != "" {
				prev = line
			}
			continue
		}
		var block strings.Builder
		start := i + 1
		for i++; i < len(lines) && strings.TrimRight(lines[i], "\n") != "```"; i++ {
			block.WriteString(lines[i])
		}
		if i == len(lines) {
			t.Fatalf("clients.md:%d: unterminated code block", start)
		}
		m := fileLink.FindStringSubmatch(prev)
		prev = ""
		if m == nil {
			continue
		}
		want, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(m[1])))
		if err != nil {
			t.Fatalf("clients.md:%d names %s: %v", start, m[1], err)
		}
		if block.String() != string(want) {
			t.Errorf("clients.md:%d: the code block differs from %s; copy the file into the document", start, m[1])
		}
		embedded[strings.TrimPrefix(m[1], "clients/")] = true
	}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); (ext == ".mjs" || ext == ".py") && !embedded[filepath.ToSlash(path)] {
			t.Errorf("%s is not in docs/clients.md", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(embedded) < 4 {
		t.Fatalf("only %d recipe files found in docs/clients.md", len(embedded))
	}
}

func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("MTR_REQUIRE_CLIENTS") != "" {
			t.Fatalf("%s is not installed", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
	return p
}

// python is $MTR_PYTHON (hack/test.sh sets it to an interpreter with
// requests) or python3.
func python(t *testing.T) string {
	if p := os.Getenv("MTR_PYTHON"); p != "" {
		return p
	}
	return need(t, "python3")
}

func run(t *testing.T, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1"), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, errOut.String())
	}
	return out.String()
}

// keysAndVerdicts returns well-formed keys and near misses, one a line, and
// the verdict the Go parser gives each.
func keysAndVerdicts(t *testing.T) (string, string) {
	var in, want strings.Builder
	for i := range 50 {
		env := apikey.EnvProduction
		if i%2 == 1 {
			env = apikey.EnvStaging
		}
		k, err := apikey.Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		typo := []byte(k)
		typo[9+i%46] ^= 1 // stays base62 mostly; the checksum no longer matches
		for _, c := range []string{k, string(typo), k[:54], k + "0", "mtr_prod_" + k[9:], strings.ToUpper(k)} {
			in.WriteString(c + "\n")
			fmt.Fprintln(&want, apikey.Parse(c) == nil)
		}
	}
	return in.String(), want.String()
}

// The Node and Python ports of the key checksum agree with the Go parser.
func TestRecipesCheckTheKeyLikeGo(t *testing.T) {
	in, want := keysAndVerdicts(t)
	t.Run("node", func(t *testing.T) {
		got := run(t, in, nil, need(t, "node"), "--input-type=module", "-e", `
import { isWellFormed } from './node/meterr-key.mjs';
import { createInterface } from 'node:readline';
for await (const l of createInterface({ input: process.stdin })) console.log(isWellFormed(l));`)
		if got != want {
			t.Fatal("isWellFormed disagrees with apikey.Parse")
		}
	})
	t.Run("python", func(t *testing.T) {
		got := run(t, in, nil, python(t), "-c", `
import sys; sys.path.insert(0, "python")
from meterr_key import is_well_formed
for l in sys.stdin: print("true" if is_well_formed(l.rstrip("\n")) else "false")`)
		if got != want {
			t.Fatal("is_well_formed disagrees with apikey.Parse")
		}
	})
}

// The webhook recipes accept what pkg/webhooksig signs with the current or
// the previous secret, and refuse the rest.
func TestWebhookRecipesMatchTheGoPackage(t *testing.T) {
	cur, prev, other := []byte("whsec_current"), []byte("whsec_previous"), []byte("whsec_other")
	body := []byte(`{"event":"key.rotated","key_id":"0a1b2c3d4e5f"}`)
	now := time.Now()
	sig := func(at time.Time, s ...[]byte) string {
		v, err := webhooksig.SignAt(body, at, s...)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	type tc struct {
		name, header string
		body         []byte
		legacy, want bool
	}
	cases := []tc{
		{"current", sig(now, cur), body, false, true},
		{"previous", sig(now, prev), body, false, true},
		{"both, as a rotating sender signs", sig(now, other, cur), body, false, true},
		{"another secret", sig(now, other), body, false, false},
		{"tampered body", sig(now, cur), append(append([]byte{}, body...), ' '), false, false},
		{"too old", sig(now.Add(-10*time.Minute), cur), body, false, false},
		{"from the future", sig(now.Add(10*time.Minute), cur), body, false, false},
		{"legacy refused", webhooksig.Sign(cur, body), body, false, false},
		{"legacy allowed", webhooksig.Sign(prev, body), body, true, true},
		{"legacy upper case", strings.ToUpper(webhooksig.Sign(cur, body)), body, true, true},
		{"empty", "", body, true, false},
		{"no timestamp", "v1=" + webhooksig.Sign(cur, body), body, false, false},
		{"garbage", "t=1,v1=zz", body, true, false},
	}
	var in, want strings.Builder
	dir := t.TempDir()
	for i, c := range cases {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, c.body, 0o600); err != nil {
			t.Fatal(err)
		}
		h := c.header
		if h == "" {
			h = "-"
		}
		fmt.Fprintf(&in, "%s %s %v\n", p, h, c.legacy)
		// The Go package's verdict must be the same.
		v := webhooksig.Verifier{Secrets: [][]byte{cur, prev}, AllowLegacy: c.legacy}
		if got := v.Verify(c.body, c.header) == nil; got != c.want {
			t.Fatalf("test bug: webhooksig says %v for %s", got, c.name)
		}
		fmt.Fprintln(&want, c.want)
	}
	env := []string{"WEBHOOK_SECRET=" + string(cur), "WEBHOOK_SECRET_PREVIOUS=" + string(prev)}
	check := func(t *testing.T, got string) {
		sc := bufio.NewScanner(strings.NewReader(got))
		wl := strings.Fields(want.String())
		for i := 0; sc.Scan(); i++ {
			if i >= len(cases) || sc.Text() != wl[i] {
				t.Errorf("%s: got %s, want %s", cases[min(i, len(cases)-1)].name, sc.Text(), wl[min(i, len(wl)-1)])
			}
		}
	}
	t.Run("node", func(t *testing.T) {
		check(t, run(t, in.String(), env, need(t, "node"), "--input-type=module", "-e", `
import { verifyWebhook } from './node/verify-webhook.mjs';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
const secrets = [process.env.WEBHOOK_SECRET, process.env.WEBHOOK_SECRET_PREVIOUS];
for await (const l of createInterface({ input: process.stdin })) {
  const [file, sig, legacy] = l.split(' ');
  console.log(verifyWebhook(readFileSync(file), sig === '-' ? '' : sig, secrets, { allowLegacy: legacy === 'true' }));
}`))
	})
	t.Run("python", func(t *testing.T) {
		check(t, run(t, in.String(), env, python(t), "-c", `
import os, sys; sys.path.insert(0, "python")
from verify_webhook import verify_webhook
secrets = [os.environ["WEBHOOK_SECRET"], os.environ["WEBHOOK_SECRET_PREVIOUS"]]
for l in sys.stdin:
    f, sig, legacy = l.split()
    ok = verify_webhook(open(f, "rb").read(), "" if sig == "-" else sig, secrets, allow_legacy=legacy == "true")
    print("true" if ok else "false")`))
	})
}

// currentKey / current_key follow the kubelet's swap within one process and
// never return a malformed file's content.
func TestRecipesFollowTheSwap(t *testing.T) {
	dir := t.TempDir()
	swap := func(content string) { kubeletSwap(t, dir, content) }
	k1, _ := apikey.Generate(apikey.EnvProduction)
	k2, _ := apikey.Generate(apikey.EnvProduction)
	env := []string{"METERR_API_KEY_FILE=" + filepath.Join(dir, "api-key"), "METERR_API_KEY="}
	for _, lang := range []struct{ name, bin, script string }{
		{"node", "node", `
import { currentKey } from './node/meterr-key.mjs';
import { createInterface } from 'node:readline';
import { createHash } from 'node:crypto';
for await (const _ of createInterface({ input: process.stdin }))
  console.log(createHash('sha256').update(currentKey()).digest('hex').slice(0, 12));`},
		{"python", "python3", `
import hashlib, sys; sys.path.insert(0, "python")
from meterr_key import current_key
for _ in sys.stdin: print(hashlib.sha256(current_key().encode()).hexdigest()[:12], flush=True)`},
	} {
		t.Run(lang.name, func(t *testing.T) {
			bin := need(t, lang.bin)
			if lang.name == "python" {
				bin = python(t)
			}
			args := []string{"-c", lang.script}
			if lang.name == "node" {
				args = []string{"--input-type=module", "-e", lang.script}
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1"), env...)
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			swap(k1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(stdout)
			ask := func() string {
				fmt.Fprintln(stdin, "key")
				if !lines.Scan() {
					t.Fatalf("no answer: %s", errOut.String())
				}
				return lines.Text()
			}
			id1, id2 := apikey.HashOf(k1).ID(), apikey.HashOf(k2).ID()
			steps := []struct {
				publish, want string
			}{{"", id1}, {k1[:30], id1}, {k2 + "x", id1}, {k2 + "\n", id2}, {"", id2}}
			for i, s := range steps {
				if s.publish != "" {
					swap(s.publish)
				}
				if got := ask(); got != s.want {
					t.Fatalf("step %d: key id %s, want %s", i, got, s.want)
				}
			}
			_ = stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v: %s", err, errOut.String())
			}
		})
	}
}

// kubeletSwap publishes content as dir/api-key the way the kubelet updates a
// Secret volume: a new timestamped directory, "..data_tmp" renamed over
// "..data", api-key -> ..data/api-key.
func kubeletSwap(t *testing.T, dir, content string) {
	t.Helper()
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "api-key"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	_ = os.Symlink("..data/api-key", filepath.Join(dir, "api-key"))
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
}

// meterrFetch and meterr_request retry once, with the new key and the same
// body, when a request raced a rotation: the server below swaps the volume
// when it sees the old key (on /swap) and refuses it with expired_api_key.
func TestRecipesRetryOnceAfterARotation(t *testing.T) {
	dir := t.TempDir()
	k1, _ := apikey.Generate(apikey.EnvProduction)
	k2, _ := apikey.Generate(apikey.EnvProduction)
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %s", r.URL.Path, apikey.HashOf(key).ID(), body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if key == k2 {
			fmt.Fprintf(w, `{"valid":true,"key_id":%q}`, apikey.HashOf(key).ID())
			return
		}
		if r.URL.Path == "/swap" {
			kubeletSwap(t, dir, k2)
		}
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"type":"authentication_error","message":"API key has expired","code":"expired_api_key"}}`)
	}))
	defer srv.Close()
	id1, id2 := apikey.HashOf(k1).ID(), apikey.HashOf(k2).ID()
	want := []string{
		"/swap " + id1 + " ", "/swap " + id2 + " ", // GET: retried with the new key
		"/swap " + id1 + " payload", "/swap " + id2 + " payload", // POST: the same body again
		"/noswap " + id1 + " ", // the key did not change: no retry
	}
	wantOut := "200\n200\n401\n"
	for _, lang := range []struct{ name, bin string }{{"node", "node"}, {"python", "python3"}} {
		t.Run(lang.name, func(t *testing.T) {
			var bin string
			var args []string
			if lang.name == "node" {
				bin = need(t, "node")
				args = []string{"--input-type=module", "-e", `
import { meterrFetch } from './node/meterr-key.mjs';
import { createInterface } from 'node:readline';
const u = process.env.URL;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
console.log((await meterrFetch(u + '/swap')).status); await lines.next();
console.log((await meterrFetch(u + '/swap', { method: 'POST', body: 'payload' })).status); await lines.next();
console.log((await meterrFetch(u + '/noswap')).status);`}
			} else {
				bin = python(t)
				args = []string{"-c", `
import os, sys; sys.path.insert(0, "python")
from meterr_key import meterr_request
u = os.environ["URL"]
print(meterr_request("GET", u + "/swap").status_code, flush=True); sys.stdin.readline()
print(meterr_request("POST", u + "/swap", data="payload").status_code, flush=True); sys.stdin.readline()
print(meterr_request("GET", u + "/noswap").status_code, flush=True)`}
			}
			mu.Lock()
			seen = nil
			mu.Unlock()
			kubeletSwap(t, dir, k1)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "URL="+srv.URL,
				"METERR_API_KEY_FILE="+filepath.Join(dir, "api-key"), "METERR_API_KEY=")
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(stdout)
			var out strings.Builder
			for i := 0; i < 3 && lines.Scan(); i++ {
				out.WriteString(lines.Text() + "\n")
				kubeletSwap(t, dir, k1) // back to the old key for the next request
				fmt.Fprintln(stdin, "next")
			}
			_ = stdin.Close() // lets node's readline end
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v: %s", err, errOut.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if out.String() != wantOut || fmt.Sprint(seen) != fmt.Sprint(want) {
				t.Fatalf("statuses %q, requests %q; want %q, %q", out.String(), seen, wantOut, want)
			}
		})
	}
}
