package authserver

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain_Arguments(t *testing.T) {
	ctx := context.Background()
	if err := Main(ctx, "meterr-auth-server", []string{"--help"}, "v", "c"); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v, want flag.ErrHelp", err)
	}
	if err := Main(ctx, "meterr-auth-server", []string{"serve"}, "v", "c"); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("a stray argument: %v", err)
	}
	if err := Main(ctx, "meterr-auth-server", []string{"--no-such-flag"}, "v", "c"); err == nil {
		t.Error("an unknown flag was accepted")
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if err := Main(ctx, "meterr-auth-server", []string{"--kubeconfig", missing}, "v", "c"); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing kubeconfig: %v", err)
	}
}
