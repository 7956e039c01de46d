package install

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

const chartDir = "charts/meterr-operator"

// helmTemplate renders the chart as release "meterr" in meterr-system.
func helmTemplate(t *testing.T, args ...string) []obj {
	t.Helper()
	return decode(t, run(t, helmBin(t), append([]string{"template", "meterr", chartDir, "--namespace", "meterr-system"}, args...)...))
}

func kustomize(t *testing.T, dir string) []obj {
	t.Helper()
	return decode(t, run(t, kubectlBin(t), "kustomize", dir))
}

func jsonOf(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// TestChartCRDMatchesConfig: the chart's files/crds/, which
// templates/crds.yaml renders, is a copy of config/crd/bases.
func TestChartCRDMatchesConfig(t *testing.T) {
	want, err := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
	if err != nil || len(want) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	got, _ := filepath.Glob(filepath.Join(root, chartDir, "files/crds/*.yaml"))
	if len(got) != len(want) {
		t.Fatalf("%s/files/crds has %d files, config/crd/bases %d", chartDir, len(got), len(want))
	}
	if old, _ := filepath.Glob(filepath.Join(root, chartDir, "crds/*")); len(old) > 0 {
		t.Errorf("%s/crds/ holds %v: Helm would install those once and never upgrade them, and fail on the templated copy", chartDir, old)
	}
	for _, w := range want {
		a, _ := os.ReadFile(w)
		b, err := os.ReadFile(filepath.Join(root, chartDir, "files", "crds", filepath.Base(w)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s/files/crds/%s differs from %s (%v): cp config/crd/bases/*.yaml %s/files/crds/",
				chartDir, filepath.Base(w), w, err, chartDir)
		}
	}
}

// TestChartLintAndTemplate lints and renders the chart with the default
// values and with every optional value on.
func TestChartLintAndTemplate(t *testing.T) {
	helm := helmBin(t)
	allOn := filepath.Join(chartDir, "ci", "all-on-values.yaml")
	run(t, helm, "lint", "--strict", chartDir)
	run(t, helm, "lint", "--strict", chartDir, "-f", allOn)
	def := index(helmTemplate(t))
	on := index(helmTemplate(t, "-f", allOn))
	for _, k := range []string{
		"ServiceMonitor/meterr-system/meterr-manager", "ServiceMonitor/meterr-system/meterr-auth-server",
		"Certificate/meterr-system/meterr-auth-server",
		"ClusterRoleBinding//meterr-metrics-reader",
		"Role/meterr-records/meterr-auth-server", "Role/meterr-records/meterr-manager-leader-election",
		"Service/meterr-system/meterr-leak-intake",
		"Secret/meterr-system/meterr-usage-token", "Role/meterr-system/meterr-manager-usage",
	} {
		if on[k] == nil {
			t.Errorf("all-on values: no %s", k)
		}
		if def[k] != nil {
			t.Errorf("default values: unexpected %s", k)
		}
	}
	for _, k := range []string{"NetworkPolicy/meterr-system/meterr-auth-server", "NetworkPolicy/meterr-system/meterr-manager"} {
		if on[k] == nil || def[k] == nil {
			t.Errorf("no %s with the default values or all on", k)
		}
	}
	auth := on["Deployment/meterr-system/meterr-auth-server"]
	c := get(auth, "spec", "template", "spec", "containers").([]any)[0]
	args := strings.Join(toStrings(get(c, "args")), " ")
	for _, want := range []string{
		"--records-namespace=meterr-records", "--environment=production", "--trusted-proxies=198.51.100.10/32,203.0.113.0/28",
		"--route=GET /v1/=read", "--route=* /v1/admin/=admin", "--log-decisions=denied", "--redis-failure-mode=closed",
		"--tls-cert-file=/etc/meterr/tls/tls.crt", "--tls-key-file=/etc/meterr/tls/tls.key", "--grpc-listen=:9000",
		"--zap-log-level=debug", "--max-header-bytes=32768", "--shutdown-delay=10s",
		"--grpc-client-ca=/etc/meterr/grpc-client-ca/bundle.pem", "--grpc-client-san=envoy.envoy-gateway-system.svc",
		"--usage-token-file=/etc/meterr/usage/token",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("auth server args %q lack %q", args, want)
		}
	}
	if env := jsonOf(get(c, "env")); !strings.Contains(env, `"MTR_REDIS_URL"`) || !strings.Contains(env, `"meterr-redis"`) {
		t.Errorf("auth server env lacks MTR_REDIS_URL from the Secret: %s", env)
	}
	if img := get(c, "image"); img != "registry.example.com/meterr/meterr-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
		t.Errorf("image %v", img)
	}
	svc := jsonOf(get(on["Service/meterr-system/meterr-auth-server"], "spec", "ports"))
	if !strings.Contains(svc, `"grpc"`) || !strings.Contains(svc, "443") {
		t.Errorf("auth Service ports %s: want https on 443 and grpc", svc)
	}
	if svc := jsonOf(get(def["Service/meterr-system/meterr-auth-server"], "spec", "ports")); !strings.Contains(svc, `"grpc"`) || !strings.Contains(svc, "9001") {
		t.Errorf("default auth Service lacks the gRPC port 9001 that config/ ships: %s", svc)
	}
	mgr := get(on["Deployment/meterr-system/meterr-manager"], "spec", "template", "spec", "containers").([]any)[0]
	margs := strings.Join(toStrings(get(mgr, "args")), " ")
	for _, want := range []string{"--min-rotation-interval=30m", "--zap-log-level=debug", "--max-concurrent-reconciles=32", "--records-namespace=meterr-records",
		"--usage-token-file=/etc/meterr/usage/token", "--usage-namespace=meterr-system", "--usage-service=meterr-auth-server-metrics",
		"--last-used-interval=2m", "--last-used-writes-per-second=50", "--overlap-warning-window=6h"} {
		if !strings.Contains(margs, want) {
			t.Errorf("manager args %q lack %q", margs, want)
		}
	}
}

func toStrings(v any) []string {
	var s []string
	for _, x := range v.([]any) {
		s = append(s, x.(string))
	}
	return s
}

// normalizeRules sorts each rule's lists and the rules, so that equal
// permissions compare equal however they are written.
func normalizeRules(v any) []string {
	var out []string
	rules, _ := v.([]any)
	for _, r := range rules {
		m := map[string][]string{}
		for k, l := range r.(map[string]any) {
			s := toStrings(l)
			sort.Strings(s)
			m[k] = s
		}
		out = append(out, jsonOf(m))
	}
	sort.Strings(out)
	return out
}

// TestChartNoDrift: with its default values the chart renders what
// config/default does, where it matters: the same objects (by kind and
// name), RBAC rules and bindings, pod specs (args, probes, security
// contexts, resources, scheduling), Services and the PDB. The chart's
// selectors also name the release (app.kubernetes.io/instance), which
// config/ has no notion of: that one label is taken out of the chart's
// specs before they are compared.
func TestChartNoDrift(t *testing.T) {
	chart := index(helmTemplate(t))
	for _, o := range chart {
		if sp, ok := o["spec"]; ok {
			dropInstance(sp)
		}
	}
	kust := index(kustomize(t, "config/default"))

	delete(kust, "Namespace//meterr-system") // helm install --create-namespace, or the user's
	var missing, extra []string
	for k := range kust {
		if chart[k] == nil {
			missing = append(missing, k)
		}
	}
	for k := range chart {
		if kust[k] == nil {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra) > 0 {
		t.Errorf("objects differ: only in config/default %v, only in the chart %v", missing, extra)
	}

	for k, want := range kust {
		got := chart[k]
		if got == nil {
			continue
		}
		kind := want["kind"].(string)
		cmp := func(what string, path ...string) {
			t.Helper()
			w, g := get(want, path...), get(got, path...)
			if !reflect.DeepEqual(w, g) {
				t.Errorf("%s: %s differ:\nconfig/default: %s\nchart:          %s", k, what, jsonOf(w), jsonOf(g))
			}
		}
		switch kind {
		case "ClusterRole", "Role":
			if w, g := normalizeRules(want["rules"]), normalizeRules(got["rules"]); !reflect.DeepEqual(w, g) {
				t.Errorf("%s: rules differ:\nconfig/default: %v\nchart:          %v", k, w, g)
			}
		case "ClusterRoleBinding", "RoleBinding":
			cmp("roleRef", "roleRef")
			cmp("subjects", "subjects")
		case "Deployment":
			for _, f := range []string{"replicas", "selector", "strategy", "minReadySeconds"} {
				cmp(f, "spec", f)
			}
			cmp("pod annotations", "spec", "template", "metadata", "annotations")
			// The whole pod spec: containers (image, args, env, ports,
			// probes, lifecycle, resources, security context, mounts),
			// the pod security context, volumes and scheduling.
			cmp("pod spec", "spec", "template", "spec")
		case "Service":
			cmp("ports", "spec", "ports")
			cmp("selector", "spec", "selector")
			if w, g := get(want, "spec", "type"), get(got, "spec", "type"); (w == nil && g != nil && g != "ClusterIP") || (w != nil && w != g) {
				t.Errorf("%s: type %v, config/default %v", k, g, w)
			}
		case "PodDisruptionBudget", "NetworkPolicy":
			cmp("spec", "spec")
		case "CustomResourceDefinition":
			cmp("spec", "spec")
		case "ServiceAccount":
			cmp("automountServiceAccountToken", "automountServiceAccountToken")
		default:
			t.Errorf("%s: kind %s is not compared; add it to TestChartNoDrift", k, kind)
		}
		// config/'s labels are on every chart object too.
		for l, v := range asMap(get(want, "metadata", "labels")) {
			if asMap(get(got, "metadata", "labels"))[l] != v {
				t.Errorf("%s: label %s=%v missing from the chart's", k, l, v)
			}
		}
	}
}

// dropInstance removes app.kubernetes.io/instance=meterr from every map in
// v: selectors, label selectors of spread constraints and affinities.
func dropInstance(v any) {
	switch v := v.(type) {
	case map[string]any:
		if v["app.kubernetes.io/instance"] == "meterr" {
			delete(v, "app.kubernetes.io/instance")
		}
		for _, e := range v {
			dropInstance(e)
		}
	case []any:
		for _, e := range v {
			dropInstance(e)
		}
	}
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// TestChartGRPCTLS: the gRPC Service port says what it speaks (cleartext
// HTTP/2, or TLS), client certificates are asked for only over TLS, and the
// CA bundle is mounted from the TLS Secret or the one named.
func TestChartGRPCTLS(t *testing.T) {
	grpcPort := func(objs map[string]obj) map[string]any {
		t.Helper()
		for _, p := range get(objs["Service/meterr-system/meterr-auth-server"], "spec", "ports").([]any) {
			if get(p, "name") == "grpc" {
				return p.(map[string]any)
			}
		}
		t.Fatal("no grpc port on Service meterr-auth-server")
		return nil
	}
	if ap := grpcPort(index(helmTemplate(t)))["appProtocol"]; ap != "kubernetes.io/h2c" {
		t.Errorf("cleartext gRPC port: appProtocol %v, want kubernetes.io/h2c", ap)
	}
	tls := index(helmTemplate(t, "--set", "authServer.tls.enabled=true"))
	if ap := grpcPort(tls)["appProtocol"]; ap != "https" {
		t.Errorf("gRPC port over TLS: appProtocol %v, want https", ap)
	}
	if spec := jsonOf(get(tls["Deployment/meterr-system/meterr-auth-server"], "spec", "template", "spec")); strings.Contains(spec, "grpc-client-ca") {
		t.Errorf("client CA mounted or passed without clientCA.enabled:\n%s", spec)
	}

	for _, c := range []struct {
		args   []string
		secret string
		key    string
		san    string
	}{
		{nil, "meterr-auth-server-tls", "ca.crt", ""},
		{[]string{"--set", "authServer.grpc.clientCA.secretName=gateway-ca", "--set", "authServer.grpc.clientCA.key=bundle.pem",
			"--set", "authServer.grpc.clientCA.sans={envoy.gw.svc,spiffe://cluster.local/ns/gw/sa/envoy}"},
			"gateway-ca", "bundle.pem", "envoy.gw.svc,spiffe://cluster.local/ns/gw/sa/envoy"},
	} {
		objs := index(helmTemplate(t, append([]string{"--set", "authServer.tls.enabled=true", "--set", "authServer.grpc.clientCA.enabled=true"}, c.args...)...))
		pod := get(objs["Deployment/meterr-system/meterr-auth-server"], "spec", "template", "spec")
		ctr := get(pod, "containers").([]any)[0]
		args := toStrings(get(ctr, "args"))
		if !slices.Contains(args, "--grpc-client-ca=/etc/meterr/grpc-client-ca/"+c.key) {
			t.Errorf("args %q lack --grpc-client-ca=/etc/meterr/grpc-client-ca/%s", args, c.key)
		}
		if c.san != "" && !slices.Contains(args, "--grpc-client-san="+c.san) || c.san == "" && strings.Contains(strings.Join(args, " "), "--grpc-client-san") {
			t.Errorf("args %q, want --grpc-client-san=%q", args, c.san)
		}
		var vol any
		for _, v := range get(pod, "volumes").([]any) {
			if get(v, "name") == "grpc-client-ca" {
				vol = v
			}
		}
		if got := get(vol, "secret", "secretName"); got != c.secret {
			t.Errorf("grpc-client-ca volume from Secret %v, want %s: %s", got, c.secret, jsonOf(vol))
		}
		if items := jsonOf(get(vol, "secret", "items")); !strings.Contains(items, `"key": "`+c.key+`"`) {
			t.Errorf("grpc-client-ca volume items %s, want key %s", items, c.key)
		}
		if mounts := jsonOf(get(ctr, "volumeMounts")); !strings.Contains(mounts, `"mountPath": "/etc/meterr/grpc-client-ca"`) || strings.Contains(mounts, "subPath") {
			t.Errorf("grpc-client-ca mounts %s: want a directory mount at /etc/meterr/grpc-client-ca", mounts)
		}
	}
}

// TestChartRefuses: values that cannot work fail the render with a message
// that says what to set.
func TestChartRefuses(t *testing.T) {
	helm := helmBin(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "authServer.grpc.clientCA.enabled=true"}, "authServer.grpc.clientCA.enabled needs authServer.tls.enabled"},
		{[]string{"--set", "authServer.tls.enabled=true", "--set", "authServer.grpc.clientCA.enabled=true", "--set", "authServer.grpc.enabled=false"},
			"authServer.grpc.clientCA.enabled needs authServer.grpc.enabled"},
		{[]string{"--set", "networkPolicy.apiServerPorts={443}"}, "networkPolicy.apiServerPorts is now networkPolicy.apiServer.ports"},
		{[]string{"--set", "networkPolicy.redisPort=6380"}, "networkPolicy.redisPort is now networkPolicy.redis.port"},
		{[]string{"--set", "networkPolicy.dns.peers=null"}, "networkPolicy.dns.peers is empty"},
		// What helm upgrade --reuse-values renders from a release of an
		// older chart: that chart's defaults, without the new values.
		{[]string{"--set", "networkPolicy.apiServer=null"}, "use --reset-then-reuse-values"},
	} {
		out, err := runErr(helm, append([]string{"template", "meterr", chartDir, "--namespace", "meterr-system"}, c.args...)...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("helm template %s: err %v, want a failure saying %q:\n%s", strings.Join(c.args, " "), err, c.want, out)
		}
	}
}
