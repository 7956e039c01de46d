package install

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersionStamp: `make build` stamps `git describe` and `git rev-parse
// HEAD` into the binary, and a plain `go build` says "dev".
func TestVersionStamp(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	if _, err := runErr("git", "rev-parse", "HEAD"); err != nil {
		t.Skip("not in a git checkout")
	}
	bin := t.TempDir()
	run(t, "make", "-s", "build", "LOCALBIN="+bin)
	got := run(t, filepath.Join(bin, "meterr-operator"), "version")
	describe := strings.TrimSpace(run(t, "git", "describe", "--tags", "--always", "--dirty"))
	commit := strings.TrimSpace(run(t, "git", "rev-parse", "HEAD"))
	for _, want := range []string{"meterr-operator " + describe + " ", "commit " + commit, runtime.Version()} {
		if !strings.Contains(got, want) {
			t.Errorf("version %q lacks %q", got, want)
		}
	}

	// The slim auth server binary, from the same build and stamps.
	got = run(t, filepath.Join(bin, "meterr-auth-server"), "version")
	for _, want := range []string{"meterr-auth-server " + describe + " ", "commit " + commit, runtime.Version()} {
		if !strings.Contains(got, want) {
			t.Errorf("meterr-auth-server version %q lacks %q", got, want)
		}
	}

	plain := filepath.Join(bin, "plain")
	run(t, "go", "build", "-o", plain, ".")
	if got := run(t, plain, "version"); !strings.HasPrefix(got, "meterr-operator dev (commit unknown, "+runtime.Version()) {
		t.Errorf("unstamped version %q", got)
	}
	if got := run(t, stampedBinary(t), "version"); !strings.HasPrefix(got, "meterr-operator v9.8.7 (commit 0123abc, "+runtime.Version()) {
		t.Errorf("stamped version %q", got)
	}
}
