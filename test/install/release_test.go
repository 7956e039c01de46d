package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBundle: hack/release.sh (make release) writes install.yaml with
// the image pinned and the packaged chart; install.yaml applies to a local
// control plane, a second apply changes nothing, and a server-side apply
// works too.
func TestReleaseBundle(t *testing.T) {
	t.Parallel()
	helm := helmBin(t)
	kubectl := kubectlBin(t)
	out := t.TempDir()
	runEnv(t, []string{"HELM=" + helm, "KUBECTL=" + kubectl, "IMAGE_REPOSITORY=registry.example.com/meterr/meterr-operator"},
		filepath.Join(root, "hack", "release.sh"), "v0.9.1", out)

	if _, err := os.Stat(filepath.Join(out, "meterr-operator-0.9.1.tgz")); err != nil {
		t.Fatalf("no packaged chart: %v", err)
	}
	meta := run(t, helm, "show", "chart", filepath.Join(out, "meterr-operator-0.9.1.tgz"))
	if !strings.Contains(meta, "version: 0.9.1") || !strings.Contains(meta, "appVersion: v0.9.1") {
		t.Errorf("packaged Chart.yaml:\n%s", meta)
	}
	vals := run(t, helm, "show", "values", filepath.Join(out, "meterr-operator-0.9.1.tgz"))
	if !strings.Contains(vals, "repository: registry.example.com/meterr/meterr-operator") {
		t.Errorf("packaged values do not name the image repository")
	}

	installYAML := filepath.Join(out, "install.yaml")
	data, err := os.ReadFile(installYAML)
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, string(data))
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o["kind"].(string)]++
		if o["kind"] == "Deployment" {
			for _, c := range get(o, "spec", "template", "spec", "containers").([]any) {
				if img := get(c, "image"); img != "registry.example.com/meterr/meterr-operator:v0.9.1" {
					t.Errorf("%s: image %v, want it pinned to v0.9.1", key(o), img)
				}
			}
		}
	}
	for _, k := range []string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
		"Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if kinds[k] == 0 {
			t.Errorf("install.yaml has no %s", k)
		}
	}

	kc := controlPlane(t)
	apply := func(args ...string) string {
		t.Helper()
		return run(t, kubectl, append([]string{"--kubeconfig", kc, "apply", "-f", installYAML}, args...)...)
	}
	first := apply()
	if n := strings.Count(first, " created"); n != len(objs) {
		t.Errorf("first apply created %d objects, want %d:\n%s", n, len(objs), first)
	}
	versions := func() string {
		t.Helper()
		return run(t, kubectl, "--kubeconfig", kc, "get", "-f", installYAML, "--no-headers",
			"-o", "custom-columns=KIND:.kind,NAME:.metadata.name,VERSION:.metadata.resourceVersion")
	}
	before := versions()
	if n := strings.Count(before, "\n"); n != len(objs) {
		t.Fatalf("resource versions of %d objects, want %d:\n%s", n, len(objs), before)
	}
	second := apply()
	for _, l := range strings.Split(strings.TrimSpace(second), "\n") {
		// kubectl reports a PodDisruptionBudget "configured" on every
		// client-side apply (its selector's patch strategy is "replace", so
		// the patch is never empty); the resource versions below show that
		// nothing was written.
		if !strings.HasSuffix(l, " unchanged") && l != "poddisruptionbudget.policy/meterr-auth-server configured" {
			t.Errorf("second apply changed something: %q", l)
		}
	}
	if after := versions(); after != before {
		t.Errorf("second apply wrote objects:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	ssa := apply("--server-side")
	if n := strings.Count(ssa, "serverside-applied"); n != len(objs) {
		t.Errorf("server-side apply: %d of %d objects applied:\n%s", n, len(objs), ssa)
	}
	// Every object is there.
	for _, o := range objs {
		args := []string{"--kubeconfig", kc, "get", strings.ToLower(o["kind"].(string)), get(o, "metadata", "name").(string)}
		if ns, _ := get(o, "metadata", "namespace").(string); ns != "" {
			args = append(args, "-n", ns)
		}
		if _, err := runErr(kubectl, args...); err != nil {
			t.Errorf("%s not found after apply", key(o))
		}
	}
}
