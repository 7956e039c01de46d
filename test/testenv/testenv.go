// Package testenv is the one local control plane (etcd and kube-apiserver
// from KUBEBUILDER_ASSETS, through controller-runtime's envtest) and the one
// wait helper shared by the suites under test/ and the benchmark harness
// (test/bench), so that each does not carry its own copy of either.
//
// It has no testing.T or Ginkgo in its API: the harness is a command, not a
// test.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Options configure Start. The zero value is a control plane from
// $KUBEBUILDER_ASSETS with an admin kubeconfig in a new temporary directory.
type Options struct {
	// Assets holds etcd, kube-apiserver and kubectl; default $KUBEBUILDER_ASSETS.
	Assets string
	// Dir receives the kubeconfigs; default a new temporary directory,
	// removed by Stop.
	Dir string
	// Admin names the system:masters user of Env.Kubeconfig; default "admin".
	Admin string
	// CRDDirs are directories of CustomResourceDefinitions to install once
	// the API server is up; each must exist.
	CRDDirs []string
	// StartTimeout and StopTimeout bound the control plane's start and stop.
	// StartTimeout defaults to DefaultStartTimeout; StopTimeout to envtest's.
	StartTimeout, StopTimeout time.Duration
}

// DefaultStartTimeout is how long a kube-apiserver may take to become ready.
// envtest's 20 s default is too short when make test runs its suites at once
// on 2 cores: a start that would have succeeded is killed and retried, five
// times, and the suite fails (seen with unit, race and e2e together).
const DefaultStartTimeout = 2 * time.Minute

// Env is a running control plane.
type Env struct {
	env *envtest.Environment
	// Assets is the directory of etcd, kube-apiserver and kubectl.
	Assets string
	// Dir holds the kubeconfigs written by Start and AddUser.
	Dir string
	// Config and Kubeconfig are the admin's (system:masters).
	Config     *rest.Config
	Kubeconfig string
	ownDir     bool
}

// Start starts etcd and kube-apiserver and writes an admin kubeconfig.
func Start(o Options) (*Env, error) {
	if o.Assets == "" {
		o.Assets = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.Assets == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS must point at etcd, kube-apiserver and kubectl (make envtest-assets)")
	}
	if o.Admin == "" {
		o.Admin = "admin"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	e := &Env{Assets: o.Assets, Dir: o.Dir}
	if e.Dir == "" {
		d, err := os.MkdirTemp("", "meterr-testenv-")
		if err != nil {
			return nil, err
		}
		e.Dir, e.ownDir = d, true
	}
	e.env = &envtest.Environment{
		BinaryAssetsDirectory:    o.Assets,
		CRDDirectoryPaths:        o.CRDDirs,
		ErrorIfCRDPathMissing:    len(o.CRDDirs) > 0,
		ControlPlaneStartTimeout: o.StartTimeout,
		ControlPlaneStopTimeout:  o.StopTimeout,
	}
	if _, err := e.env.Start(); err != nil {
		e.cleanDir()
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	var err error
	if e.Kubeconfig, e.Config, err = e.AddUser(o.Admin, envtest.User{Name: o.Admin, Groups: []string{"system:masters"}}); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// AddUser authenticates user to the API server and writes its kubeconfig to
// <Dir>/<name>.kubeconfig; it returns the path and the user's rest.Config.
func (e *Env) AddUser(name string, user envtest.User) (string, *rest.Config, error) {
	u, err := e.env.AddUser(user, nil)
	if err != nil {
		return "", nil, err
	}
	data, err := u.KubeConfig()
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(e.Dir, name+".kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", nil, err
	}
	return path, rest.CopyConfig(u.Config()), nil
}

// Kubectl is the path of the kubectl binary beside the control plane's.
func (e *Env) Kubectl() string { return filepath.Join(e.Assets, "kubectl") }

// Stop stops the control plane (and removes Dir when Start made it). Stop
// the API server's clients first, or it waits for their watches.
func (e *Env) Stop() error {
	err := e.env.Stop()
	e.cleanDir()
	return err
}

func (e *Env) cleanDir() {
	if e.ownDir {
		_ = os.RemoveAll(e.Dir)
	}
}

// ServiceAccount is the user a kubeconfig of service account ns/name
// authenticates as.
func ServiceAccount(ns, name string) envtest.User {
	return envtest.User{
		Name:   "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
}
