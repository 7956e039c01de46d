package install

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// previousChartCommit holds chart 0.1.0 as released before the CRD became a
// template and selectors named the release: charts/meterr-operator/crds/,
// Deployment selectors of name and component only.
const previousChartCommit = "d340cd68a800ce673cb83cd19726778a0c56b1f7"

// helmOn runs helm against a control plane with a private Helm home.
type helmOn struct {
	t       *testing.T
	helm    string
	kc      string
	homes   []string
	kubectl string
}

func newHelmOn(t *testing.T) *helmOn {
	t.Helper()
	return &helmOn{t: t, helm: helmBin(t), kc: controlPlane(t), kubectl: kubectlBin(t),
		homes: []string{"HELM_CACHE_HOME=" + t.TempDir(), "HELM_CONFIG_HOME=" + t.TempDir(), "HELM_DATA_HOME=" + t.TempDir()}}
}

func (h *helmOn) run(args ...string) string {
	h.t.Helper()
	return runEnv(h.t, h.homes, h.helm, append(args, "--kubeconfig", h.kc, "--namespace", "meterr-system")...)
}

func (h *helmOn) runErr(args ...string) (string, error) {
	return runErrEnv(h.homes, h.helm, append(args, "--kubeconfig", h.kc, "--namespace", "meterr-system")...)
}

func (h *helmOn) k(args ...string) string {
	h.t.Helper()
	return run(h.t, h.kubectl, append([]string{"--kubeconfig", h.kc}, args...)...)
}

// crd returns the MeterrAPIKey CRD as stored.
func (h *helmOn) crd() map[string]any {
	h.t.Helper()
	var o map[string]any
	if err := json.Unmarshal([]byte(h.k("get", "crd", "meterrapikeys.auth.meterr.ai", "-o", "json")), &o); err != nil {
		h.t.Fatal(err)
	}
	return o
}

func printerColumns(crd map[string]any) int {
	cols, _ := get(crd, "spec", "versions").([]any)[0].(map[string]any)["additionalPrinterColumns"].([]any)
	return len(cols)
}

// TestHelmUpgradeUpgradesCRD: the CRD is a template, so `helm upgrade`
// brings it to the chart's version (Helm never upgrades a chart's crds/),
// and keeps it on uninstall.
func TestHelmUpgradeUpgradesCRD(t *testing.T) {
	t.Parallel()
	h := newHelmOn(t)

	// An "older" chart: the same, with a CRD that lacks its printer columns.
	old := filepath.Join(t.TempDir(), "meterr-operator")
	if out, err := exec.Command("cp", "-r", filepath.Join(root, chartDir), old).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	crdFiles, _ := filepath.Glob(filepath.Join(old, "files", "crds", "*.yaml"))
	if len(crdFiles) != 1 {
		t.Fatalf("CRD files %v", crdFiles)
	}
	raw, err := os.ReadFile(crdFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	delete(get(c, "spec", "versions").([]any)[0].(map[string]any), "additionalPrinterColumns")
	raw, _ = yaml.Marshal(c)
	if err := os.WriteFile(crdFiles[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}

	h.run("install", "meterr", old, "--create-namespace")
	if n := printerColumns(h.crd()); n != 0 {
		t.Fatalf("the older chart's CRD has %d printer columns", n)
	}
	h.run("upgrade", "meterr", filepath.Join(root, chartDir))
	crd := h.crd()
	if n := printerColumns(crd); n == 0 {
		t.Error("helm upgrade did not upgrade the CRD: no printer columns")
	}
	if a := asMap(get(crd, "metadata", "annotations")); a["helm.sh/resource-policy"] != "keep" {
		t.Errorf("CRD annotations %v", a)
	}
	h.run("uninstall", "meterr")
	h.k("get", "crd", "meterrapikeys.auth.meterr.ai") // kept
}

// TestHelmUpgradeFromPreviousChart: a release of chart 0.1.0 (CRD from
// crds/, selectors without the release) upgrades as docs/deploy.md says:
// `helm upgrade --take-ownership` adopts the CRD, and the Deployments keep
// their selectors (which cannot change).
func TestHelmUpgradeFromPreviousChart(t *testing.T) {
	t.Parallel()
	prev := t.TempDir()
	archive, err := exec.Command("git", "-C", root, "archive", previousChartCommit, chartDir).Output()
	if err != nil {
		t.Skipf("chart 0.1.0 is not in this checkout's history (git archive %s: %v)", previousChartCommit[:7], err)
	}
	untar := exec.Command("tar", "-x", "-C", prev)
	untar.Stdin = strings.NewReader(string(archive))
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	h := newHelmOn(t)
	h.run("install", "meterr", filepath.Join(prev, chartDir), "--create-namespace")
	oldSel := h.k("-n", "meterr-system", "get", "deployment", "meterr-auth-server", "-o", "jsonpath={.spec.selector.matchLabels}")
	if strings.Contains(oldSel, "instance") {
		t.Fatalf("chart 0.1.0's selector already names the release: %s", oldSel)
	}

	// Without adoption Helm refuses the CRD it did not create as a template.
	out, err := h.runErr("upgrade", "meterr", filepath.Join(root, chartDir))
	if err == nil || !strings.Contains(out, "meterrapikeys.auth.meterr.ai") {
		t.Errorf("helm upgrade from 0.1.0 without --take-ownership: err %v, want it to refuse the CRD:\n%s", err, out)
	}
	h.run("upgrade", "meterr", filepath.Join(root, chartDir), "--take-ownership")
	for _, d := range []string{"meterr-auth-server", "meterr-manager"} {
		if sel := h.k("-n", "meterr-system", "get", "deployment", d, "-o", "jsonpath={.spec.selector.matchLabels}"); strings.Contains(sel, "instance") {
			t.Errorf("%s: selector %s changed (it cannot, on a real upgrade)", d, sel)
		}
		if l := h.k("-n", "meterr-system", "get", "deployment", d, "-o", "jsonpath={.spec.template.metadata.labels}"); !strings.Contains(l, `"app.kubernetes.io/instance":"meterr"`) {
			t.Errorf("%s: pod labels %s lack the instance label", d, l)
		}
	}
	if a := asMap(get(h.crd(), "metadata", "annotations")); a["meta.helm.sh/release-name"] != "meterr" || a["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the CRD was not adopted: %v", a)
	}
	// And the next upgrade is an ordinary one.
	h.run("upgrade", "meterr", filepath.Join(root, chartDir), "--set", "authServer.replicas=4")
}
