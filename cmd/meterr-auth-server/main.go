// meterr-auth-server: the auth server alone, the same command as
// `meterr-operator auth-server` in a binary that links nothing of the manager,
// so that each auth server replica maps only the pages of what it does. The
// image carries both binaries; the Deployments run this one.
//
//	meterr-auth-server [flags]    verify API keys (GET /v1/auth/verify, /v1/auth/check, ext_authz)
//	meterr-auth-server version    print the version, commit and Go version
//
// A leading "auth-server" is accepted and ignored, so arguments written for
// `meterr-operator auth-server` work unchanged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/meterr/meterr-operator/cmd/authserver"
)

// version and commit are stamped at build time, as the main binary's are
// (the Makefile's LDFLAGS set main.version and main.commit of both).
var (
	version = "dev"
	commit  = ""
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "auth-server" {
		args = args[1:]
	}
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version") {
		fmt.Println(versionString())
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := authserver.Main(ctx, "meterr-auth-server", args, version, commit)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "meterr-auth-server: %v\n", err)
		os.Exit(1)
	}
}

// versionString is what `meterr-auth-server version` prints, e.g.
// "meterr-auth-server v0.2.0 (commit 1a2b3c..., go1.26.8 linux/amd64)".
func versionString() string {
	c := commit
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("meterr-auth-server %s (commit %s, %s %s/%s)", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
