package install

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestHelmInstallUninstall installs the chart into a local control plane
// with values set, checks that the Deployments as stored carry them, and
// that `helm uninstall` removes everything but the CRD (crds.keep puts
// helm.sh/resource-policy: keep on it). No pods run: the control plane has no scheduler or
// kubelet.
func TestHelmInstallUninstall(t *testing.T) {
	t.Parallel()
	helm := helmBin(t)
	kc := controlPlane(t)
	kubectl := kubectlBin(t)
	k := func(args ...string) string {
		t.Helper()
		return run(t, kubectl, append([]string{"--kubeconfig", kc}, args...)...)
	}
	helmEnv := []string{"--kubeconfig", kc, "--namespace", "meterr-system"}
	homes := []string{"HELM_CACHE_HOME=" + t.TempDir(), "HELM_CONFIG_HOME=" + t.TempDir(), "HELM_DATA_HOME=" + t.TempDir()}

	runEnv(t, homes, helm, append([]string{"install", "meterr", chartDir, "--create-namespace",
		"--set", "image.repository=registry.example.com/meterr-operator", "--set", "image.tag=v1.2.3",
		"--set", "logLevel=debug",
		"--set", "manager.minRotationInterval=2h",
		"--set", "manager.resources.limits.memory=300Mi",
		"--set", "authServer.replicas=4",
		"--set", "authServer.environment=staging",
		"--set", "authServer.trustedProxies={10.0.0.0/8}",
		"--set", "authServer.logDecisions=all",
		"--set", "authServer.redis.existingSecret=meterr-redis",
		"--set", "authServer.resources.requests.cpu=250m",
		"--set", "authServer.nodeSelector.pool=edge",
	}, helmEnv...)...)

	type container struct {
		Image     string
		Command   []string
		Args      []string
		Resources struct{ Requests, Limits map[string]string }
		Env       []struct{ Name string }
	}
	type deployment struct {
		Spec struct {
			Replicas int
			Template struct {
				Spec struct {
					NodeSelector map[string]string
					Containers   []container
				}
			}
		}
	}
	getDeploy := func(name string) deployment {
		t.Helper()
		var d deployment
		if err := json.Unmarshal([]byte(k("-n", "meterr-system", "get", "deployment", name, "-o", "json")), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	has := func(what string, list []string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !slices.Contains(list, w) {
				t.Errorf("%s %q lacks %q", what, list, w)
			}
		}
	}

	auth := getDeploy("meterr-auth-server")
	ac := auth.Spec.Template.Spec.Containers[0]
	if auth.Spec.Replicas != 4 {
		t.Errorf("auth server replicas %d, want 4", auth.Spec.Replicas)
	}
	// The image's slim binary, the auth server alone.
	has("auth server command", ac.Command, "/meterr-auth-server")
	has("auth server args", ac.Args, "--records-namespace=meterr-system", "--environment=staging",
		"--trusted-proxies=10.0.0.0/8", "--log-decisions=all", "--zap-log-level=debug")
	if ac.Image != "registry.example.com/meterr-operator:v1.2.3" {
		t.Errorf("auth server image %q", ac.Image)
	}
	if ac.Resources.Requests["cpu"] != "250m" || ac.Resources.Limits["memory"] != "256Mi" {
		t.Errorf("auth server resources %+v", ac.Resources)
	}
	if ns := auth.Spec.Template.Spec.NodeSelector; !reflect.DeepEqual(ns, map[string]string{"kubernetes.io/os": "linux", "pool": "edge"}) {
		t.Errorf("auth server nodeSelector %v", ns)
	}
	var envs []string
	for _, e := range ac.Env {
		envs = append(envs, e.Name)
	}
	has("auth server env", envs, "MTR_REDIS_URL", "GOMEMLIMIT")

	mgr := getDeploy("meterr-manager")
	mc := mgr.Spec.Template.Spec.Containers[0]
	if mgr.Spec.Replicas != 1 {
		t.Errorf("manager replicas %d, want 1", mgr.Spec.Replicas)
	}
	has("manager args", mc.Args, "manager", "--leader-elect", "--min-rotation-interval=2h", "--zap-log-level=debug")
	if mc.Resources.Limits["memory"] != "300Mi" || mc.Resources.Requests["cpu"] != "100m" {
		t.Errorf("manager resources %+v", mc.Resources)
	}

	// Installed into a cluster, the chart pins the API server's egress rule
	// to the addresses behind the kubernetes Service (read with lookup).
	addrs := strings.Fields(k("-n", "default", "get", "endpointslice", "kubernetes", "-o", "jsonpath={.endpoints[*].addresses[*]}"))
	if len(addrs) == 0 {
		t.Fatal("the control plane has no kubernetes EndpointSlice addresses")
	}
	for _, name := range []string{"meterr-auth-server", "meterr-manager"} {
		var np struct {
			Spec struct {
				Egress []struct {
					To []struct{ IPBlock *struct{ CIDR string } }
				}
			}
		}
		if err := json.Unmarshal([]byte(k("-n", "meterr-system", "get", "networkpolicy", name, "-o", "json")), &np); err != nil {
			t.Fatal(err)
		}
		if len(np.Spec.Egress) == 0 {
			t.Fatalf("NetworkPolicy %s has no egress rules", name)
		}
		var cidrs []string
		for _, to := range np.Spec.Egress[0].To {
			if to.IPBlock != nil {
				cidrs = append(cidrs, to.IPBlock.CIDR)
			}
		}
		for _, a := range addrs {
			if !slices.Contains(cidrs, a+"/32") && !slices.Contains(cidrs, a+"/128") {
				t.Errorf("NetworkPolicy %s: API server rule %v lacks %s, an address of the kubernetes EndpointSlice", name, cidrs, a)
			}
		}
	}

	// On Cilium, whose ipBlocks match node addresses only with
	// policy-cidr-match-mode=nodes, the chart pins nothing without it.
	apiRule := func() string {
		t.Helper()
		out := runEnv(t, homes, helm, append([]string{"template", "meterr", chartDir, "--dry-run=server",
			"--show-only", "templates/networkpolicy.yaml"}, helmEnv...)...)
		for _, o := range decode(t, out) {
			if get(o, "metadata", "name") == "meterr-auth-server" {
				return jsonOf(get(o, "spec", "egress").([]any)[0])
			}
		}
		t.Fatalf("no NetworkPolicy meterr-auth-server in:\n%s", out)
		return ""
	}
	k("-n", "kube-system", "create", "configmap", "cilium-config", "--from-literal=policy-cidr-match-mode=")
	if rule := apiRule(); strings.Contains(rule, "ipBlock") {
		t.Errorf("with Cilium not matching nodes by CIDR, the API server rule names addresses: %s", rule)
	}
	k("-n", "kube-system", "patch", "configmap", "cilium-config", "--type=merge", "-p", `{"data":{"policy-cidr-match-mode":"nodes"}}`)
	if rule := apiRule(); !strings.Contains(rule, addrs[0]+"/") {
		t.Errorf("with Cilium's policy-cidr-match-mode=nodes, the API server rule lacks %s: %s", addrs[0], rule)
	}

	// What the chart made, by kind.
	kinds := "deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies"
	before := k("-n", "meterr-system", "get", kinds, "-o", "name")
	for _, want := range []string{"deployment.apps/meterr-manager", "deployment.apps/meterr-auth-server",
		"service/meterr-auth-server", "role.rbac.authorization.k8s.io/meterr-auth-server",
		"poddisruptionbudget.policy/meterr-auth-server", "networkpolicy.networking.k8s.io/meterr-auth-server",
		"networkpolicy.networking.k8s.io/meterr-manager"} {
		if !strings.Contains(before, want) {
			t.Errorf("after install, no %s in:\n%s", want, before)
		}
	}
	clusterKinds := []string{"get", "clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/instance=meterr", "-o", "name"}
	if out := k(clusterKinds...); !strings.Contains(out, "clusterrole.rbac.authorization.k8s.io/meterr-manager") {
		t.Errorf("after install, no ClusterRole meterr-manager in:\n%s", out)
	}

	runEnv(t, homes, helm, append([]string{"uninstall", "meterr"}, helmEnv...)...)
	after := k("-n", "meterr-system", "get", kinds, "-o", "name")
	for _, l := range strings.Fields(after) {
		// The namespace's own default ServiceAccount is not the chart's.
		if l != "serviceaccount/default" {
			t.Errorf("left behind after helm uninstall: %s", l)
		}
	}
	if out := k(clusterKinds...); strings.TrimSpace(out) != "" {
		t.Errorf("cluster-wide RBAC left behind after helm uninstall:\n%s", out)
	}
	for _, n := range []string{"meterr-manager", "meterr-metrics-reader"} {
		if _, err := runErr(kubectl, "--kubeconfig", kc, "get", "clusterrole", n); err == nil {
			t.Errorf("ClusterRole %s left behind after helm uninstall", n)
		}
	}
	// Kept (crds.keep), as README.md says: deleting it would delete every
	// MeterrAPIKey.
	k("get", "crd", "meterrapikeys.auth.meterr.ai")
}
