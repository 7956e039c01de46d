// Command pprofwrap runs the same code as `meterr-operator manager` and
// `meterr-operator auth-server` (cmd.RunManager, webhookserver.Run,
// with the same flags) plus net/http/pprof on --pprof-addr, so that the
// benchmark harness (`hack/bench.sh -- -pprof`) can take CPU and heap
// profiles of them under load without adding a profiling endpoint to the
// product binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meterr/meterr-operator/cmd"
	"github.com/meterr/meterr-operator/webhookserver"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pprofwrap manager|auth-server [flags] --pprof-addr HOST:PORT")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "pprofwrap %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func run(ctx context.Context, command string, args []string) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig.")
	pprofAddr := fs.String("pprof-addr", "127.0.0.1:6060", "Address of net/http/pprof.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	var start func(cfg *rest.Config) error
	switch command {
	case "manager":
		var o cmd.ManagerOptions
		o.AddFlags(fs)
		start = func(cfg *rest.Config) error { return cmd.RunManager(ctx, cfg, o) }
	case "auth-server":
		var o webhookserver.Options
		o.AddFlags(fs)
		start = func(cfg *rest.Config) error {
			return webhookserver.Run(ctx, cfg, o, ctrl.Log.WithName("auth-server"))
		}
	default:
		return fmt.Errorf("unknown command %q", command)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *pprofAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	return start(cfg)
}
