package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/config"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/webhookserver"
)

// DevOptions are the flags of `meterr-operator dev`.
type DevOptions struct {
	AssetsDir        string
	DataDir          string
	APIServerPort    int
	AuthListen       string
	SamplesNamespace string
	NoSamples        bool
}

// AddFlags registers the dev flags.
func (o *DevOptions) AddFlags(fs *flag.FlagSet) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join("bin", "k8s", "1.37.2")
	}
	fs.StringVar(&o.AssetsDir, "assets-dir", assets, "Directory with the etcd, kube-apiserver and kubectl binaries (`make envtest-assets` builds them); default $KUBEBUILDER_ASSETS.")
	fs.StringVar(&o.DataDir, "data-dir", ".dev", "Directory for the kubeconfig and other run files.")
	fs.IntVar(&o.APIServerPort, "apiserver-port", 0, "Port of the local kube-apiserver on 127.0.0.1 (0 picks a free one).")
	fs.StringVar(&o.AuthListen, "auth-listen", "127.0.0.1:8080", "Address of the auth server.")
	fs.StringVar(&o.SamplesNamespace, "samples-namespace", "default", "Namespace the sample MeterrAPIKeys are applied to.")
	fs.BoolVar(&o.NoSamples, "no-samples", false, "Do not apply the sample MeterrAPIKeys.")
}

// RunDev runs a local control plane, the manager and the auth server until
// ctx is done, and tells the user how to reach them.
func RunDev(ctx context.Context, o DevOptions, out io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }
	for _, bin := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(o.AssetsDir, bin)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make envtest-assets` or pass --assets-dir", bin, o.AssetsDir)
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return err
	}
	crds, err := loadCRDs()
	if err != nil {
		return err
	}

	say("starting a local control plane (etcd and kube-apiserver from %s)", o.AssetsDir)
	env := &envtest.Environment{
		BinaryAssetsDirectory:   o.AssetsDir,
		CRDInstallOptions:       envtest.CRDInstallOptions{CRDs: crds},
		ControlPlaneStopTimeout: 30 * time.Second,
		// envtest's 20 s kills and retries a start that is only slow, as
		// on 2 busy cores (make test runs the dev command beside its other
		// suites).
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	if o.APIServerPort != 0 {
		env.ControlPlane.APIServer = &envtest.APIServer{SecureServing: envtest.SecureServing{
			ListenAddr: envtest.ListenAddr{Address: "127.0.0.1", Port: strconv.Itoa(o.APIServerPort)}}}
	}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the local control plane: %w", err)
	}
	defer func() {
		say("stopping the local control plane")
		err = errors.Join(err, env.Stop())
	}()

	admin, err := env.AddUser(envtest.User{Name: "dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath, _ := filepath.Abs(filepath.Join(o.DataDir, "kubeconfig"))
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	defer os.Remove(kubeconfigPath)

	c, err := client.New(cfg, client.Options{Scheme: authv1alpha1.Scheme})
	if err != nil {
		return err
	}
	const recordsNamespace = "meterr-system"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: recordsNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	say("starting the manager")
	go func() {
		errs <- RunManager(ctx, cfg, ManagerOptions{
			RecordsNamespace: recordsNamespace, MetricsAddr: "0", ProbeAddr: "0",
			TombstoneRetention: 720 * time.Hour, QPS: 200, Burst: 400, MaxConcurrentReconciles: 4,
			MinRotationInterval: controllers.DefaultMinRotationInterval,
		})
	}()
	say("starting the auth server on %s", o.AuthListen)
	authOpts := webhookserver.DefaultOptions()
	authOpts.Listen, authOpts.MetricsAddr, authOpts.RecordsNamespace = o.AuthListen, "0", recordsNamespace
	go func() { errs <- webhookserver.Run(ctx, cfg, authOpts, ctrl.Log.WithName("auth-server")) }()

	base := "http://" + strings.Replace(o.AuthListen, "0.0.0.0", "127.0.0.1", 1)
	if strings.HasPrefix(o.AuthListen, ":") {
		base = "http://127.0.0.1" + o.AuthListen
	}
	if err := waitReady(ctx, base+"/readyz", errs); err != nil {
		return err
	}

	kubectl, _ := filepath.Abs(filepath.Join(o.AssetsDir, "kubectl"))
	k := fmt.Sprintf("%s --kubeconfig %s", kubectl, kubeconfigPath)
	var example string
	if !o.NoSamples {
		names, err := applySamples(ctx, c, o.SamplesNamespace)
		if err != nil {
			return err
		}
		say("applied the samples to namespace %q: %s", o.SamplesNamespace, strings.Join(names, ", "))
		// The read-only sample has no IP or domain restriction, so a plain curl works.
		example = names[0]
		for _, n := range names {
			if n == "billing-reader" {
				example = n
			}
		}
		for _, n := range names {
			if err := waitKeyReady(ctx, c, types.NamespacedName{Namespace: o.SamplesNamespace, Name: n}, errs); err != nil {
				return err
			}
		}
	}

	fmt.Fprintf(out, "\nmeterr-operator is running. In another terminal:\n\n")
	fmt.Fprintf(out, "  export KUBECONFIG=%s\n", kubeconfigPath)
	fmt.Fprintf(out, "  %s get mak -n %s            # the keys, with their columns\n", kubectl, o.SamplesNamespace)
	if example != "" {
		secret := example
		mak := &authv1alpha1.MeterrAPIKey{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: o.SamplesNamespace, Name: example}, mak); err == nil && mak.Spec.SecretName != "" {
			secret = mak.Spec.SecretName
		}
		keyCmd := fmt.Sprintf("%s get secret %s -n %s -o jsonpath='{.data.%s}' | base64 -d", k, secret, o.SamplesNamespace, authv1alpha1.DataKeyAPIKey)
		fmt.Fprintf(out, "\n  # verify the key the operator delivered to Secret %s/%s:\n", o.SamplesNamespace, secret)
		fmt.Fprintf(out, "  curl -s %s/v1/auth/verify -H \"Authorization: Bearer $(%s)\"\n", base, keyCmd)
		if body, err := verifyWithSecret(ctx, c, base, o.SamplesNamespace, secret); err == nil {
			fmt.Fprintf(out, "  # expected answer (just now):\n  %s\n", body)
		}
		fmt.Fprintf(out, "\n  # rotate it declaratively, as a GitOps pipeline would (the old key keeps working for the overlap;\n")
		fmt.Fprintf(out, "  # within a minute of the key's issue the rotation waits, and Ready says RotationDelayed until when):\n")
		fmt.Fprintf(out, "  %s patch mak %s -n %s --type merge -p \"{\\\"spec\\\":{\\\"rotation\\\":{\\\"requestedAt\\\":\\\"$(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)\\\"}}}\"\n",
			k, example, o.SamplesNamespace)
		fmt.Fprintf(out, "  %s get mak %s -n %s -o jsonpath='{.status}'\n", k, example, o.SamplesNamespace)
	}
	fmt.Fprintf(out, "\nPress Ctrl-C to stop everything.\n")

	select {
	case <-ctx.Done():
		fmt.Fprintln(out)
		say("shutting down")
		cancel()
		return nil
	case err := <-errs:
		return err
	}
}

func loadCRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	err := fs.WalkDir(config.CRDs, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := config.CRDs.ReadFile(path)
		if err != nil {
			return err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return fmt.Errorf("reading embedded CRD %s: %w", path, err)
		}
		out = append(out, crd)
		return nil
	})
	return out, err
}

// applySamples creates the embedded samples (left as they are if present).
func applySamples(ctx context.Context, c client.Client, namespace string) ([]string, error) {
	entries, err := fs.ReadDir(config.Samples, "samples")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		data, err := config.Samples.ReadFile("samples/" + e.Name())
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			return nil, fmt.Errorf("reading sample %s: %w", e.Name(), err)
		}
		u.SetNamespace(namespace)
		if err := c.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("applying sample %s: %w", e.Name(), err)
		}
		names = append(names, u.GetName())
	}
	return names, nil
}

// poll calls done every 100 ms until it reports true, ctx ends or one of
// the components fails (errs).
func poll(ctx context.Context, errs <-chan error, done func() bool) error {
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func waitReady(ctx context.Context, url string, errs <-chan error) error {
	return poll(ctx, errs, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitKeyReady(ctx context.Context, c client.Client, name types.NamespacedName, errs <-chan error) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := poll(wctx, errs, func() bool {
		mak := &authv1alpha1.MeterrAPIKey{}
		return c.Get(wctx, name, mak) == nil && meta.IsStatusConditionTrue(mak.Status.Conditions, authv1alpha1.ConditionReady)
	})
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return fmt.Errorf("MeterrAPIKey %s did not become Ready within a minute", name)
	}
	return err
}

func verifyWithSecret(ctx context.Context, c client.Client, base, namespace, name string) (string, error) {
	s := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, s); err != nil {
		return "", err
	}
	var last string
	for range 20 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/auth/verify", nil)
		req.Header.Set("Authorization", "Bearer "+string(s.Data[authv1alpha1.DataKeyAPIKey]))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusOK {
			return last, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last, nil
}
