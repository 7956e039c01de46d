package cmd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meterr/meterr-operator/pkg/webhooksig"
)

func TestWebhookSignVerify(t *testing.T) {
	dir := t.TempDir()
	secretFile := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cur := secretFile("cur", "whsec_current\n") // a trailing newline is ignored
	old := secretFile("old", "whsec_old")
	t.Setenv("MTR_TEST_WEBHOOK_SECRET", "whsec_current")
	now := func() time.Time { return time.Unix(1700000000, 0) }
	body := `{"event":"key.rotated"}`
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := RunWebhook(args, strings.NewReader(body), &out, &out, now)
		if err != nil && (strings.Contains(err.Error(), "whsec_") || strings.Contains(out.String(), "whsec_")) {
			t.Fatalf("a secret leaked: %v / %s", err, out.String())
		}
		return strings.TrimSpace(out.String()), err
	}

	sig, err := run("sign", "--secret-file", cur)
	if err != nil || !strings.HasPrefix(sig, "t=1700000000,v1=") {
		t.Fatalf("sign: %q %v", sig, err)
	}
	if want, _ := webhooksig.SignAt([]byte(body), now(), []byte("whsec_current")); sig != want {
		t.Fatalf("sign printed %q, the package %q", sig, want)
	}
	if out, err := run("verify", "--secret-env", "MTR_TEST_WEBHOOK_SECRET", "--signature", sig); err != nil || out != "ok" {
		t.Fatalf("verify: %q %v", out, err)
	}
	if _, err := run("verify", "--secret-file", old, "--signature", sig); !errors.Is(err, webhooksig.ErrMismatch) {
		t.Fatalf("verify with the wrong secret: %v", err)
	}
	if _, err := run("verify", "--secret-file", old, "--secret-file", cur, "--signature", sig); err != nil {
		t.Fatalf("verify during a rotation: %v", err)
	}

	legacy, err := run("sign", "--legacy", "--secret-file", cur)
	if err != nil || legacy != webhooksig.Sign([]byte("whsec_current"), []byte(body)) {
		t.Fatalf("legacy: %q %v", legacy, err)
	}
	if _, err := run("verify", "--secret-file", cur, "--signature", legacy); !errors.Is(err, webhooksig.ErrLegacy) {
		t.Fatalf("legacy accepted without --allow-legacy: %v", err)
	}
	if _, err := run("verify", "--secret-file", cur, "--signature", legacy, "--allow-legacy"); err != nil {
		t.Fatalf("legacy with --allow-legacy: %v", err)
	}

	for _, args := range [][]string{
		{"sign"},
		{"sign", "--secret-file", filepath.Join(dir, "missing")},
		{"sign", "--secret-file", secretFile("empty", "\n")},
		{"sign", "--secret-env", "MTR_TEST_UNSET_VARIABLE"},
		{"sign", "--legacy", "--secret-file", cur, "--secret-file", old},
		{"verify", "--secret-file", cur},
		{"sign", "--secret-file", cur, "--timestamp", "-5"},
		{"rotate"},
	} {
		if _, err := run(args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
