package install

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// allOnValues is the values file that sets every value of the chart.
var allOnValues = filepath.Join(chartDir, "ci", "all-on-values.yaml")

// TestChartSchemaRefuses: values.schema.json refuses a misspelt or ill-typed
// value at render (and so at helm install), naming it.
func TestChartSchemaRefuses(t *testing.T) {
	helm := helmBin(t)
	for _, c := range []struct{ set, want string }{
		{"authServer.replica=3", "additional properties 'replica' not allowed"},
		{"authServer.replicas=three", "/authServer/replicas"},
		{"authserver.replicas=3", "additional properties 'authserver' not allowed"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"image.digest=latest", "/image/digest"},
		{"serviceMonitor.intervall=1m", "additional properties 'intervall' not allowed"},
		{"serviceMonitor.scrapeTimeout=ten", "/serviceMonitor/scrapeTimeout"},
		{"authServer.logDecisions=some", "/authServer/logDecisions"},
		{"authServer.redis.failureMode=maybe", "/authServer/redis/failureMode"},
		{"authServer.environment=prod", "/authServer/environment"},
		{"authServer.grpc.port=70000", "/authServer/grpc/port"},
		{"authServer.autoscaling.maxReplicas=0", "/authServer/autoscaling/maxReplicas"},
		{"manager.serviceAccount.create=yes", "/manager/serviceAccount/create"},
		{"crds.keeep=true", "additional properties 'keeep' not allowed"},
		{"prometheusRule.enable=true", "additional properties 'enable' not allowed"},
		{"namePrefix=Meterr", "/namePrefix"},
	} {
		out, err := runErr(helm, "template", "meterr", chartDir, "--namespace", "meterr-system", "--set", c.set)
		if c.want == "" {
			if err != nil {
				t.Errorf("--set %s: refused: %s", c.set, out)
			}
			continue
		}
		if err == nil || !strings.Contains(out, "values don't meet the specifications of the schema") || !strings.Contains(out, c.want) {
			t.Errorf("--set %s: err %v, want the schema to refuse it naming %q:\n%s", c.set, err, c.want, out)
		}
	}
}

// leaves returns the paths of v's leaves: scalars, lists, and empty maps.
func leaves(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		out[prefix] = v
		return
	}
	for k, e := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		leaves(p, e, out)
	}
}

func readValues(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// TestChartEveryValueRendered: ci/all-on-values.yaml sets every value of
// values.yaml, and every string it sets shows in what the chart renders;
// then the values whose effect is more than a string are checked one by one.
func TestChartEveryValueRendered(t *testing.T) {
	def, on := map[string]any{}, map[string]any{}
	leaves("", readValues(t, filepath.Join(chartDir, "values.yaml")), def)
	leaves("", readValues(t, allOnValues), on)
	// A value whose default is a map may be set as a whole in all-on
	// (e.g. resources.requests); count its leaves as set.
	// Label selectors are maps of the user's own keys: set if anything
	// under them is.
	freeForm := []string{"networkPolicy.gatewayNamespaceSelector", "networkPolicy.metricsNamespaceSelector"}
	isSet := func(p string) bool {
		if _, ok := on[p]; ok {
			return true
		}
		for _, f := range freeForm {
			if strings.HasPrefix(p, f+".") {
				p = f
			}
		}
		for q := range on {
			if strings.HasPrefix(q, p+".") {
				return true
			}
		}
		return false
	}
	var unset []string
	for p := range def {
		if !isSet(p) {
			unset = append(unset, p)
		}
	}
	sort.Strings(unset)
	if len(unset) > 0 {
		t.Errorf("%s does not set %v: set every value there, so that it is linted and rendered", allOnValues, unset)
	}

	out := run(t, helmBin(t), "template", "meterr", chartDir, "--namespace", "meterr-system", "-f", allOnValues)
	notShown := map[string]string{
		"image.tag": "image.digest replaces it",
		// Rendered through tpl: checked below.
		"extraObjects": "",
	}
	var strs func(p string, v any)
	strs = func(p string, v any) {
		switch v := v.(type) {
		case string:
			if _, skip := notShown[p]; !skip && !strings.Contains(out, v) {
				t.Errorf("value %s=%q is not in the rendered manifests", p, v)
			}
		case []any:
			for i, e := range v {
				strs(fmt.Sprintf("%s[%d]", p, i), e)
			}
		case map[string]any:
			for k, e := range v {
				strs(p+"."+k, e)
			}
		}
	}
	for p, v := range on {
		if _, skip := notShown[p]; !skip {
			strs(p, v)
		}
	}

	objs := index(decode(t, out))
	for k, o := range objs {
		if strings.HasPrefix(k, "ConfigMap/") { // extraObjects: as written
			continue
		}
		if l := asMap(get(o, "metadata", "labels")); l["example.com/cost-center"] != "platform-1234" {
			t.Errorf("%s lacks commonLabels: %v", key(o), l)
		}
	}
	for _, k := range []string{"ConfigMap/meterr-system/meterr-extra-map", "ConfigMap/meterr-system/meterr-extra-string"} {
		if objs[k] == nil {
			t.Errorf("extraObjects: no %s", k)
		}
	}
	crd := objs["CustomResourceDefinition//meterrapikeys.auth.meterr.ai"]
	if crd == nil {
		t.Fatal("crds.enabled: no CRD rendered")
	}
	if ann := asMap(get(crd, "metadata", "annotations")); ann["helm.sh/resource-policy"] != nil {
		t.Errorf("crds.keep=false: the CRD still says %v", ann)
	}

	pod := func(name string) (spec, ctr any) {
		d := objs["Deployment/meterr-system/"+name]
		spec = get(d, "spec", "template", "spec")
		return spec, get(spec, "containers").([]any)[0]
	}
	ms, mc := pod("meterr-manager")
	as, ac := pod("meterr-auth-server")
	for _, c := range []any{mc, ac} {
		if img := get(c, "image"); img != "registry.example.com/meterr/meterr-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
			t.Errorf("image %v, want the repository by digest", img)
		}
	}
	// Security contexts: the top-level values, with each component's merged over.
	if got := jsonOf(get(ms, "securityContext")); !strings.Contains(got, `"fsGroup": 10001`) || !strings.Contains(got, `"supplementalGroups"`) {
		t.Errorf("manager pod securityContext %s: want the top-level one with the manager's supplementalGroups", got)
	}
	if u := get(mc, "securityContext", "runAsUser"); u != float64(10002) {
		t.Errorf("manager container runAsUser %v, want manager.securityContext's 10002", u)
	}
	if u := get(ac, "securityContext", "runAsUser"); u != float64(10003) {
		t.Errorf("auth server container runAsUser %v, want 10003", u)
	}
	if c := jsonOf(get(ac, "securityContext")); !strings.Contains(c, `"readOnlyRootFilesystem": true`) {
		t.Errorf("auth server container securityContext %s lost the top-level settings", c)
	}
	// ServiceAccounts: the manager's created under its name with its
	// annotations; the auth server's existing one only named.
	if sa := objs["ServiceAccount/meterr-system/meterr-manager-sa-custom"]; sa == nil || asMap(get(sa, "metadata", "annotations"))["eks.amazonaws.com/role-arn"] == nil {
		t.Errorf("manager ServiceAccount: %v", sa)
	}
	if objs["ServiceAccount/meterr-system/meterr-auth-sa-existing"] != nil || objs["ServiceAccount/meterr-system/meterr-auth-server"] != nil {
		t.Error("authServer.serviceAccount.create=false: a ServiceAccount was created")
	}
	if n := get(as, "serviceAccountName"); n != "meterr-auth-sa-existing" {
		t.Errorf("auth server serviceAccountName %v", n)
	}
	if n := get(ms, "serviceAccountName"); n != "meterr-manager-sa-custom" {
		t.Errorf("manager serviceAccountName %v", n)
	}
	if s := jsonOf(get(objs["RoleBinding/meterr-records/meterr-auth-server"], "subjects")); !strings.Contains(s, "meterr-auth-sa-existing") {
		t.Errorf("the auth server's RoleBinding names %s", s)
	}
	// Extra env, volumes and mounts, besides the chart's own.
	for name, c := range map[string]any{"manager": mc, "auth server": ac} {
		env, mounts := jsonOf(get(c, "env")), jsonOf(get(c, "volumeMounts"))
		if !strings.Contains(env, "GOMEMLIMIT") || !strings.Contains(mounts, `"/tmp"`) {
			t.Errorf("%s: extras replaced the chart's own env or mounts: %s %s", name, env, mounts)
		}
	}
	if !strings.Contains(jsonOf(get(as, "volumes")), "auth-extra-volume") || !strings.Contains(jsonOf(get(ac, "env")), "AUTH_EXTRA_ENV") {
		t.Error("auth server: extraVolumes or extraEnv missing")
	}
	// The HPA owns the replica count.
	hpa := objs["HorizontalPodAutoscaler/meterr-system/meterr-auth-server"]
	if hpa == nil || get(hpa, "spec", "minReplicas") != float64(4) || len(get(hpa, "spec", "metrics").([]any)) != 2 {
		t.Errorf("HPA %s", jsonOf(hpa))
	}
	if r := get(objs["Deployment/meterr-system/meterr-auth-server"], "spec", "replicas"); r != nil {
		t.Errorf("autoscaling on, and the Deployment still sets replicas: %v", r)
	}
	// ServiceMonitors: scrapeTimeout and relabelings on every endpoint.
	for _, n := range []string{"meterr-manager", "meterr-auth-server"} {
		for _, ep := range get(objs["ServiceMonitor/meterr-system/"+n], "spec", "endpoints").([]any) {
			if get(ep, "scrapeTimeout") != "12s" || get(ep, "relabelings") == nil || get(ep, "metricRelabelings") == nil {
				t.Errorf("ServiceMonitor %s endpoint %s", n, jsonOf(ep))
			}
		}
	}
	rule := objs["PrometheusRule/meterr-system/meterr"]
	if rule == nil || asMap(get(rule, "metadata", "labels"))["release"] != "prometheus-rules" {
		t.Errorf("PrometheusRule %v", rule)
	}
	// Selectors name the release; config/'s labels stay.
	sel := asMap(get(objs["Deployment/meterr-system/meterr-auth-server"], "spec", "selector", "matchLabels"))
	if sel["app.kubernetes.io/instance"] != "meterr" || sel["app.kubernetes.io/component"] != "auth-server" || sel["example.com/cost-center"] != nil {
		t.Errorf("auth server selector %v: want name, component and instance, and no commonLabels", sel)
	}
}

// TestChartDefaultsUnchanged: with the default values the new options add
// nothing: no HPA, no PrometheusRule, replicas set, the CRD kept on
// uninstall, the image by tag.
func TestChartDefaultsUnchanged(t *testing.T) {
	objs := index(helmTemplate(t))
	for k := range objs {
		if strings.HasPrefix(k, "HorizontalPodAutoscaler/") || strings.HasPrefix(k, "PrometheusRule/") || strings.HasPrefix(k, "ConfigMap/") {
			t.Errorf("default values render %s", k)
		}
	}
	crd := objs["CustomResourceDefinition//meterrapikeys.auth.meterr.ai"]
	if ann := asMap(get(crd, "metadata", "annotations")); ann["helm.sh/resource-policy"] != "keep" {
		t.Errorf("the CRD lacks helm.sh/resource-policy: keep by default: %v", ann)
	}
	if objs2 := index(helmTemplate(t, "--set", "crds.enabled=false")); objs2["CustomResourceDefinition//meterrapikeys.auth.meterr.ai"] != nil {
		t.Error("crds.enabled=false still renders the CRD")
	}
	names := []string{}
	for k := range objs {
		if strings.HasPrefix(k, "ServiceAccount/") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	if want := []string{"ServiceAccount/meterr-system/meterr-auth-server", "ServiceAccount/meterr-system/meterr-manager"}; !slices.Equal(names, want) {
		t.Errorf("ServiceAccounts %v, want %v", names, want)
	}
}

// renderNotes renders the chart's NOTES.txt, which helm template leaves
// out: a copy of the chart carries it inside a ConfigMap.
func renderNotes(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "chart")
	if out, err := runErr("cp", "-r", filepath.Join(root, chartDir), dir); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tpl := "{{- define \"test.notes\" -}}\n" + string(notes) + "\n{{- end -}}\n"
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include \"test.notes\" . | toJson }}\n"
	for name, text := range map[string]string{"_test_notes.tpl": tpl, "zz-test-notes.yaml": cm} {
		if err := os.WriteFile(filepath.Join(dir, "templates", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := run(t, helmBin(t), append([]string{"template", "meterr", dir, "--namespace", "meterr-system", "--show-only", "templates/zz-test-notes.yaml"}, args...)...)
	objs := decode(t, out)
	if len(objs) != 1 {
		t.Fatalf("notes: %s", out)
	}
	return get(objs[0], "data", "notes").(string)
}

// TestChartNotes: NOTES.txt names the HTTP and gRPC addresses (and how the
// gRPC port is secured) and shows the first key.
func TestChartNotes(t *testing.T) {
	def := renderNotes(t)
	for _, want := range []string{
		"http://meterr-auth-server.meterr-system.svc.cluster.local:80/v1/auth/verify",
		"meterr-auth-server.meterr-system.svc.cluster.local:9001 (plaintext HTTP/2)",
		"kind: MeterrAPIKey", "kubectl -n team-a wait meterrapikey/first-key --for=condition=Ready",
		"`helm upgrade` upgrades it", "docs/integrations/",
	} {
		if !strings.Contains(def, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, def)
		}
	}
	tls := renderNotes(t, "--set", "authServer.tls.enabled=true", "--set", "authServer.grpc.clientCA.enabled=true", "--set", "authServer.grpc.port=9443")
	for _, want := range []string{"https://meterr-auth-server.meterr-system.svc.cluster.local:443/v1/auth/verify",
		"meterr-auth-server.meterr-system.svc.cluster.local:9443 (TLS, client certificates required)"} {
		if !strings.Contains(tls, want) {
			t.Errorf("NOTES.txt with TLS lacks %q:\n%s", want, tls)
		}
	}
}
