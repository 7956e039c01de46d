// meterr-operator: declarative meterr API keys for Kubernetes.
//
//	meterr-operator manager      reconcile MeterrAPIKeys into key records and workload Secrets
//	meterr-operator auth-server  verify API keys for the meterr API and for proxies
//	                             (also the binary meterr-auth-server, cmd/meterr-auth-server)
//	meterr-operator dev          run everything on a local control plane
//	meterr-operator webhook      sign and verify webhook payloads (X-Meterr-Signature)
//	meterr-operator whois        who owns a key, its state, and what the auth server would answer
//	meterr-operator revoke       revoke leaked keys (read from stdin), wherever they are issued
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meterr/meterr-operator/cmd"
	"github.com/meterr/meterr-operator/cmd/authserver"
)

// version and commit are stamped at build time by the Makefile and the
// Dockerfile: -ldflags "-X main.version=$(git describe --tags --always --dirty)
// -X main.commit=$(git rev-parse HEAD)". A build outside a checkout says "dev".
var (
	version = "dev"
	commit  = ""
)

const usage = `meterr-operator: declarative meterr API keys for Kubernetes.

Usage:
  meterr-operator manager [flags]      reconcile MeterrAPIKeys into key records and workload Secrets
  meterr-operator auth-server [flags]  verify API keys (GET /v1/auth/verify, /v1/auth/check)
  meterr-operator dev [flags]          run the whole system on a local control plane
  meterr-operator webhook sign|verify  sign or verify a webhook body (X-Meterr-Signature)
  meterr-operator whois [flags] < key  who owns a key, its state, and what the auth server would answer
  meterr-operator revoke [flags] < keys  revoke leaked keys, one per line: refused at once, replaced if current
  meterr-operator version              print the version, commit and Go version

Run "meterr-operator <command> --help" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		code := 1
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		if err.Error() != "" {
			fmt.Fprintf(os.Stderr, "meterr-operator %s: %v\n", os.Args[1], err)
		}
		os.Exit(code)
	}
}

func run(ctx context.Context, command string, args []string) error {
	if command == "webhook" {
		// A small tool with flags of its own, and no cluster.
		return cmd.RunWebhook(args, os.Stdin, os.Stdout, os.Stderr, nil)
	}
	if command == "auth-server" {
		// The same command as the slim binary meterr-auth-server.
		return authserver.Main(ctx, "meterr-operator auth-server", args, version, commit)
	}
	fs := flag.NewFlagSet("meterr-operator "+command, flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig; default: $KUBECONFIG, the in-cluster config, then ~/.kube/config.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)

	var start func() error
	switch command {
	case "manager":
		var o cmd.ManagerOptions
		o.AddFlags(fs)
		o.Version, o.Commit = version, commit
		start = func() error {
			cfg, err := restConfig(*kubeconfig)
			if err != nil {
				return err
			}
			ctrl.Log.Info("starting manager", "version", version, "recordsNamespace", o.RecordsNamespace)
			return cmd.RunManager(ctx, cfg, o)
		}
	case "dev":
		var o cmd.DevOptions
		o.AddFlags(fs)
		start = func() error {
			// The components' logs go to a file, so the instructions stay readable.
			if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
				return err
			}
			logPath := filepath.Join(o.DataDir, "meterr-operator.log")
			f, err := os.Create(logPath) //nolint:gosec // the user names the data directory
			if err != nil {
				return err
			}
			defer f.Close()
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(f)))
			klog.SetLogger(ctrl.Log.WithName("client-go"))
			fmt.Printf("==> logs of the manager and the auth server: %s\n", logPath)
			return cmd.RunDev(ctx, o, os.Stdout)
		}
	case "whois":
		var o cmd.WhoisOptions
		o.AddFlags(fs)
		start = func() error {
			cfg := func() (*rest.Config, error) { return restConfig(*kubeconfig) }
			return cmd.RunWhois(ctx, cfg, o, os.Stdin, os.Stdout, os.Stderr)
		}
	case "revoke":
		var o cmd.RevokeOptions
		o.AddFlags(fs)
		start = func() error {
			cfg := func() (*rest.Config, error) { return restConfig(*kubeconfig) }
			return cmd.RunRevoke(ctx, cfg, o, os.Stdin, os.Stdout, os.Stderr)
		}
	case "version", "--version":
		fmt.Println(versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", command)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if command != "dev" { // dev logs to a file of its own
		ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
		// client-go's own lines (watch errors, throttling) in the same
		// structured log, not on stderr in klog's format.
		klog.SetLogger(ctrl.Log.WithName("client-go"))
	}
	return start()
}

// versionString is what `meterr-operator version` prints, e.g.
// "meterr-operator v0.2.0 (commit 1a2b3c..., go1.26.8 linux/amd64)".
func versionString() string {
	c := commit
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("meterr-operator %s (commit %s, %s %s/%s)", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return ctrl.GetConfig()
}
