package install

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// stubCRDs stand in for the Prometheus Operator's and cert-manager's CRDs,
// which the components' objects need to exist; any spec is accepted.
const stubCRDs = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: issuers.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Issuer, listKind: IssuerList, plural: issuers, singular: issuer}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// TestKustomizeComponents builds each of config/components on top of
// config/default, checks what it adds, and applies the result to a local
// control plane.
func TestKustomizeComponents(t *testing.T) {
	t.Parallel()
	kubectl := kubectlBin(t)
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(root, "config"), filepath.Join(dir, "config")); err != nil {
		t.Fatal(err)
	}
	checks := map[string]func(t *testing.T, objs map[string]obj){
		"prometheus": func(t *testing.T, objs map[string]obj) {
			for _, n := range []string{"meterr-manager", "meterr-auth-server"} {
				if objs["ServiceMonitor/meterr-system/"+n] == nil {
					t.Errorf("no ServiceMonitor %s", n)
				}
			}
		},
		"grpc-mtls": func(t *testing.T, objs map[string]obj) {
			c := jsonOf(get(objs["Deployment/meterr-system/meterr-auth-server"], "spec", "template", "spec"))
			for _, want := range []string{"--grpc-client-ca=/etc/meterr/grpc-client-ca/ca.crt", `"meterr-grpc-client-ca"`,
				`"mountPath": "/etc/meterr/grpc-client-ca"`, "--tls-cert-file="} {
				if !strings.Contains(c, want) {
					t.Errorf("auth server pod spec lacks %s", want)
				}
			}
		},
		"redis": func(t *testing.T, objs map[string]obj) {
			c := jsonOf(get(objs["Deployment/meterr-system/meterr-auth-server"], "spec", "template", "spec", "containers"))
			if !strings.Contains(c, `"MTR_REDIS_URL"`) || !strings.Contains(c, `"meterr-redis"`) {
				t.Errorf("auth server has no MTR_REDIS_URL from Secret meterr-redis:\n%s", c)
			}
			egress, _ := get(objs["NetworkPolicy/meterr-system/meterr-auth-server"], "spec", "egress").([]any)
			if len(egress) == 0 || !strings.Contains(jsonOf(egress[len(egress)-1]), `"port": 6379`) {
				t.Errorf("the auth server's NetworkPolicy has no egress rule to Redis last:\n%s", jsonOf(egress))
			}
		},
		"tls": func(t *testing.T, objs map[string]obj) {
			if objs["Certificate/meterr-system/meterr-auth-server"] == nil {
				t.Errorf("no Certificate")
			}
			if ports := jsonOf(get(objs["Service/meterr-system/meterr-auth-server"], "spec", "ports")); strings.Contains(ports, "kubernetes.io/h2c") {
				t.Errorf("the gRPC port speaks TLS but its appProtocol says cleartext HTTP/2: %s", ports)
			}
			c := jsonOf(get(objs["Deployment/meterr-system/meterr-auth-server"], "spec", "template", "spec"))
			for _, want := range []string{"--tls-cert-file=/etc/meterr/tls/tls.crt", "--tls-key-file=/etc/meterr/tls/tls.key",
				`"meterr-auth-server-tls"`, `"scheme": "HTTPS"`} {
				if !strings.Contains(c, want) {
					t.Errorf("auth server pod spec lacks %s", want)
				}
			}
		},
	}
	entries, err := os.ReadDir(filepath.Join(root, "config", "components"))
	if err != nil {
		t.Fatal(err)
	}
	kc := controlPlane(t)
	crds := filepath.Join(dir, "stub-crds.yaml")
	if err := os.WriteFile(crds, []byte(stubCRDs), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, kubectl, "--kubeconfig", kc, "apply", "--server-side", "-f", crds)
	run(t, kubectl, "--kubeconfig", kc, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io")

	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// Components that build only on top of others.
	requires := map[string][]string{"grpc-mtls": {"tls"}}
	// Each component alone (with what it requires), then all of them together.
	var sets [][]string
	for _, n := range names {
		sets = append(sets, append(slices.Clone(requires[n]), n))
	}
	for _, set := range append(sets, names) {
		name := set[len(set)-1]
		if len(set) == len(names) && len(names) > 1 {
			name = "all"
		}
		t.Run(name, func(t *testing.T) {
			var components string
			for _, c := range set {
				if checks[c] == nil {
					t.Fatalf("config/components/%s has no check in TestKustomizeComponents", c)
				}
				components += "  - ../config/components/" + c + "\n"
			}
			overlay := filepath.Join(dir, name)
			if err := os.Mkdir(overlay, 0o700); err != nil {
				t.Fatal(err)
			}
			k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../config/default\ncomponents:\n" + components
			if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600); err != nil {
				t.Fatal(err)
			}
			manifests := run(t, kubectl, "kustomize", overlay)
			objs := index(decode(t, manifests))
			for _, c := range set {
				checks[c](t, objs)
			}
			built := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(built, []byte(manifests), 0o600); err != nil {
				t.Fatal(err)
			}
			// Each build on the same objects, one after the other:
			// server-side apply takes back what the previous one added.
			out := run(t, kubectl, "--kubeconfig", kc, "apply", "--server-side", "--force-conflicts", "-f", built)
			if n, want := strings.Count(out, "serverside-applied"), len(objs); n != want {
				t.Errorf("%d of %d objects applied:\n%s", n, want, out)
			}
		})
	}
}
