package docs

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// gitleaksRule is the gitleaks configuration secret-scanning.md publishes:
// the first ```toml block after its "### gitleaks" heading, as it is.
func gitleaksRule(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("secret-scanning.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "### gitleaks")
	if !ok {
		t.Fatal("secret-scanning.md has no gitleaks section")
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(after)
	if m == nil {
		t.Fatal("the gitleaks section has no toml block")
	}
	return m[1]
}

// The published regular expression and the gitleaks rule say the same thing.
func TestPublishedRegex(t *testing.T) {
	doc, _ := os.ReadFile("secret-scanning.md")
	if !strings.Contains(string(doc), "\\bmtr_(live|test)_[0-9A-Za-z]{46}\\b") {
		t.Fatal("secret-scanning.md does not publish the key regex")
	}
	re := regexp.MustCompile(`\bmtr_(live|test)_[0-9A-Za-z]{46}\b`)
	for _, env := range []string{"production", "staging"} {
		k, err := apikey.Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString("x=" + k + ";") {
			t.Fatalf("the regex misses a generated %s key", env)
		}
	}
}

type leak struct {
	RuleID string `json:"RuleID"`
	Secret string `json:"Secret"`
	File   string `json:"File"`
	Commit string `json:"Commit"`
}

func runGitleaks(t *testing.T, bin string, args ...string) []leak {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bin, append(args, "--report-format", "json", "--report-path", report, "--no-banner", "--exit-code", "0", "--log-level", "error")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("gitleaks %s: %v (output withheld: it may hold keys)", args[0], err)
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var leaks []leak
	if err := json.Unmarshal(raw, &leaks); err != nil {
		t.Fatalf("reading gitleaks' report: %v", err)
	}
	var ours []leak
	for _, l := range leaks {
		if l.RuleID == "meterr_api_key" {
			ours = append(ours, l)
		}
	}
	return ours
}

func secrets(ls []leak) map[string]bool {
	out := map[string]bool{}
	for _, l := range ls {
		out[l.Secret] = true
	}
	return out
}

// TestGitleaksRule runs the real gitleaks (make gitleaks: bin/gitleaks,
// pinned in hack/gitleaks) with the published rule over a file and a git
// history holding generated keys and near-misses.
func TestGitleaksRule(t *testing.T) {
	bin := os.Getenv("GITLEAKS")
	if bin == "" {
		bin = filepath.Join("..", "bin", "gitleaks")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no gitleaks at %s: make gitleaks", bin)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	cfg := filepath.Join(t.TempDir(), "gitleaks.toml")
	if err := os.WriteFile(cfg, []byte(gitleaksRule(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	gen := func(env string) string {
		k, err := apikey.Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	live, test := gen("production"), gen("staging")
	base := gen("production")
	body := base[len("mtr_live_") : len(base)-6]
	nearMisses := map[string]string{
		"wrong prefix":       "mtr_prod_" + base[len("mtr_live_"):],
		"wrong vendor":       "xtr_live_" + base[len("mtr_live_"):],
		"one character less": base[:len(base)-1],
		"one character more": base + "A",
		"glued into a word":  "Zz" + base,
		"a non-base62 char":  "mtr_live_" + body[:10] + "-" + body[11:] + base[len(base)-6:],
	}

	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v: %s", args[0], err, out)
		}
	}
	var misses strings.Builder
	for name, s := range nearMisses {
		misses.WriteString("# " + name + "\nTOKEN=" + s + "\n")
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("config.env", "METERR_API_KEY="+live+"\nOTHER="+test+"\n"+misses.String())

	t.Run("a file", func(t *testing.T) {
		found := secrets(runGitleaks(t, bin, "dir", dir, "-c", cfg))
		if !found[live] || !found[test] {
			t.Fatal("gitleaks missed a generated key in a file")
		}
		for name, s := range nearMisses {
			if found[s] || len(found) != 2 {
				t.Errorf("gitleaks flagged a near-miss (%s)", name)
			}
		}
	})

	t.Run("a git history", func(t *testing.T) {
		git("init", "-q", "-b", "main")
		git("add", "config.env")
		git("commit", "-q", "-m", "add config")
		// The key is removed in the next commit: only the history holds it.
		write("config.env", "METERR_API_KEY=${FROM_VAULT}\n"+misses.String())
		git("commit", "-q", "-am", "remove the key")
		if b, _ := os.ReadFile(filepath.Join(dir, "config.env")); strings.Contains(string(b), live) {
			t.Fatal("the working tree still holds the key")
		}
		ls := runGitleaks(t, bin, "git", dir, "-c", cfg)
		found := secrets(ls)
		if !found[live] || !found[test] {
			t.Fatal("gitleaks missed a generated key in the git history")
		}
		for name, s := range nearMisses {
			if found[s] {
				t.Errorf("gitleaks flagged a near-miss in the history (%s)", name)
			}
		}
		for _, l := range ls {
			if l.Commit == "" {
				t.Error("a finding without its commit")
			}
		}
	})
}
