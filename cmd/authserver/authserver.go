// Package authserver is the auth server's command: its flags, its logging
// and its cluster configuration. `meterr-operator auth-server` and the slim
// binary meterr-auth-server (cmd/meterr-auth-server) both run it; the slim
// binary links nothing of the manager, the controllers or the development
// tools, so an auth server process maps only the pages of what it does
// (docs/architecture.md, "Memory of the auth server").
//
// It imports no more of controller-runtime than its logger and its
// kubeconfig lookup: TestSlimDependencies fails when something heavier
// creeps in.
package authserver

import (
	"context"
	"flag"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meterr/meterr-operator/webhookserver"
)

// Main parses args (the flags after the command's name, which is name in
// messages), sets up logging and runs the auth server until ctx ends.
// version and commit are the build's (meterr_build_info, the start-up line).
// --help returns flag.ErrHelp.
func Main(ctx context.Context, name string, args []string, version, commit string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "Path to a kubeconfig; default: $KUBECONFIG, the in-cluster config, then ~/.kube/config.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	var o webhookserver.Options
	o.AddFlags(fs)
	o.Version, o.Commit = version, commit
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	// client-go's own lines (watch errors, throttling) in the same
	// structured log, not on stderr in klog's format.
	klog.SetLogger(log.WithName("client-go"))
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	log.Info("starting auth server", "version", version, "listen", o.Listen)
	return webhookserver.Run(ctx, cfg, o, log.WithName("auth-server"))
}

// restConfig is --kubeconfig, else controller-runtime's lookup: $KUBECONFIG,
// the in-cluster config, ~/.kube/config.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return config.GetConfig()
}
