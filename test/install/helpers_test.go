// Package install tests the ways meterr-operator is installed: the Helm chart
// (charts/meterr-operator) against config/ (no drift), `helm install` and
// `helm uninstall` on a local control plane, the release bundle
// (dist/install.yaml) and the kustomize components (config/components/), and
// the version stamped into the binary. It needs bin/helm (make helm) and the
// control plane binaries in KUBEBUILDER_ASSETS (make envtest-assets); `make
// test` provides both.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meterr/meterr-operator/test/testenv"
)

// envtest logs through controller-runtime's logger; its lines would only
// bury the test's own.
func init() { ctrllog.SetLogger(logr.Discard()) }

// root is the repository's top directory.
var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// obj is one decoded manifest.
type obj = map[string]any

// helmBin returns bin/helm ($HELM), skipping the test when it is missing
// unless MTR_REQUIRE_HELM is set (hack/test.sh sets it).
func helmBin(t *testing.T) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		h = filepath.Join(root, "bin", "helm")
	} else if !filepath.IsAbs(h) {
		h = filepath.Join(root, h)
	}
	if _, err := os.Stat(h); err != nil {
		if os.Getenv("MTR_REQUIRE_HELM") != "" {
			t.Fatalf("helm not found at %s: run `make helm`", h)
		}
		t.Skipf("helm not found at %s (make helm); skipping", h)
	}
	return h
}

// kubectlBin returns the kubectl of KUBEBUILDER_ASSETS.
func kubectlBin(t *testing.T) string {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set (make envtest-assets); skipping")
	}
	return filepath.Join(assets, "kubectl")
}

// run runs a command in the repository and returns its standard output; a
// failure ends the test with the command's output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

// runEnv is run with env (NAME=value) added to the test's environment: the
// tests that run in parallel do not change their process's.
func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErrEnv(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) { return runErrEnv(nil, name, args...) }

func runErrEnv(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// decode splits a multi-document YAML stream into objects.
func decode(t *testing.T, manifests string) []obj {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var objs []obj
	for {
		var o obj
		if err := d.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding manifests: %v", err)
		}
		if len(o) > 0 {
			objs = append(objs, o)
		}
	}
}

// key is kind/namespace/name.
func key(o obj) string {
	ns, _ := get(o, "metadata", "namespace").(string)
	return fmt.Sprintf("%s/%s/%s", o["kind"], ns, get(o, "metadata", "name"))
}

// index maps key(o) to o.
func index(objs []obj) map[string]obj {
	m := map[string]obj{}
	for _, o := range objs {
		m[key(o)] = o
	}
	return m
}

// get walks o along path; nil when absent.
func get(o any, path ...string) any {
	for _, p := range path {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[p]
	}
	return o
}

// stamped is the binary built with -X main.version=v9.8.7 -X
// main.commit=0123abc, built once for the tests that run it.
var stamped struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// stampedBinary returns the path of that binary, built on first use.
func stampedBinary(t *testing.T) string {
	t.Helper()
	stamped.once.Do(func() {
		if stamped.dir, stamped.err = os.MkdirTemp("", "meterr-install-"); stamped.err != nil {
			return
		}
		stamped.bin = filepath.Join(stamped.dir, "meterr-operator")
		var out string
		if out, stamped.err = runErr("go", "build", "-ldflags", "-X main.version=v9.8.7 -X main.commit=0123abc", "-o", stamped.bin, "."); stamped.err != nil {
			stamped.err = fmt.Errorf("go build: %w\n%s", stamped.err, out)
		}
	})
	if stamped.err != nil {
		t.Fatal(stamped.err)
	}
	return stamped.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if stamped.dir != "" {
		_ = os.RemoveAll(stamped.dir)
	}
	os.Exit(code)
}

// controlPlane starts a local control plane for one test and returns the
// path of an admin kubeconfig.
func controlPlane(t *testing.T) string {
	t.Helper()
	kubectlBin(t) // skips without KUBEBUILDER_ASSETS
	env, err := testenv.Start(testenv.Options{Dir: t.TempDir(), Admin: "install-admin"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping the control plane: %v", err)
		}
	})
	return env.Kubeconfig
}
