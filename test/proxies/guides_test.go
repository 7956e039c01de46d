package proxies

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// service is a Service of the shipped manifests.
type service struct {
	namespace string
	ports     map[string]int // by port name
}

// shippedServices reads the Services in config/auth-server.
func shippedServices(t *testing.T) map[string]service {
	t.Helper()
	files, err := filepath.Glob("../../config/auth-server/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string]service{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var svc struct {
				Kind     string
				Metadata struct{ Name, Namespace string }
				Spec     struct {
					Ports []struct {
						Name string
						Port int
					}
				}
			}
			if err := yaml.Unmarshal([]byte(doc), &svc); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if svc.Kind != "Service" {
				continue
			}
			s := service{namespace: svc.Metadata.Namespace, ports: map[string]int{}}
			for _, p := range svc.Spec.Ports {
				s.ports[p.Name] = p.Port
			}
			out[svc.Metadata.Name] = s
		}
	}
	if _, ok := out["meterr-auth-server"]; !ok {
		t.Fatalf("config/auth-server has no Service meterr-auth-server: %v", out)
	}
	return out
}

// guides are the documents whose examples must match the manifests.
func guides(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../../docs/integrations/*.md", "../../docs/integrations/*/*.md", "../../docs/auth-server.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 8 {
		t.Fatalf("only %d guides found: %v", len(files), files)
	}
	return files
}

var fence = regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")

// hostRef finds references to the auth server's Service in text:
// "meterr-auth..." with an optional port, after an optional scheme.
var hostRef = regexp.MustCompile(`(https?://)?\b(meterr-auth[a-z0-9.-]*[a-z0-9])(?::(\d+))?`)

// checker checks references against the shipped Services.
type checker struct {
	t        *testing.T
	services map[string]service
	n        int
}

// host checks a host name (NAME[.NAMESPACE[.svc[.cluster.local]]]) and
// port (0: none given); grpc says the context is gRPC, where the port must
// be the Service's grpc port.
func (c *checker) host(where, host string, port int, grpc bool) {
	c.n++
	parts := strings.SplitN(host, ".", 3)
	name := parts[0]
	svc, ok := c.services[name]
	if !ok {
		c.t.Errorf("%s: %q: no Service %q in config/ (have %v)", where, host, name, keys2(c.services))
		return
	}
	if len(parts) > 1 {
		rest := strings.Join(parts[1:], ".")
		ns, suffix, _ := strings.Cut(rest, ".")
		if ns != svc.namespace || suffix != "" && suffix != "svc" && suffix != "svc.cluster.local" {
			c.t.Errorf("%s: %q: Service %s is in namespace %s (NAME.%s.svc.cluster.local)", where, host, name, svc.namespace, svc.namespace)
		}
	}
	c.port(where, host, name, port, grpc)
}

func (c *checker) port(where, host, name string, port int, grpc bool) {
	if port == 0 {
		return
	}
	svc := c.services[name]
	if grpc {
		if svc.ports["grpc"] != port {
			c.t.Errorf("%s: %s:%d: the gRPC port of Service %s is %d", where, host, port, name, svc.ports["grpc"])
		}
		return
	}
	for _, p := range svc.ports {
		if p == port {
			return
		}
	}
	c.t.Errorf("%s: %s:%d: Service %s has ports %v", where, host, port, name, svc.ports)
}

// text checks every host reference in a string: a URL, host:port, or a
// dotted Service host.
func (c *checker) text(where, s string, grpc bool) {
	for _, m := range hostRef.FindAllStringSubmatch(s, -1) {
		if m[1] == "" && m[3] == "" && !strings.Contains(m[2], ".") {
			continue // a bare name (an Envoy cluster, a provider), not a host
		}
		port := 0
		if m[3] != "" {
			port, _ = strconv.Atoi(m[3])
		} else if m[1] != "" {
			port = 80 // a URL without a port
			if m[1] == "https://" {
				port = 443
			}
		}
		c.host(where, m[2], port, grpc)
	}
}

// walk checks a parsed YAML value: backendRefs (Gateway API), service+port
// (Istio), socket_address (Envoy) and any string.
func (c *checker) walk(where string, v any, grpc bool) {
	switch v := v.(type) {
	case map[string]any:
		if strings.Contains(strings.ToLower(where), "grpc") {
			grpc = true
		}
		if svc, ok := v["service"].(string); ok {
			if port, ok := v["port"].(float64); ok && strings.HasPrefix(svc, "meterr-auth") {
				c.host(where+".service", svc, int(port), grpc)
				delete(v, "service")
			}
		}
		if sa, ok := v["socket_address"].(map[string]any); ok {
			if addr, ok := sa["address"].(string); ok && strings.HasPrefix(addr, "meterr-auth") {
				port, _ := sa["port_value"].(float64)
				c.host(where+".socket_address", addr, int(port), grpc || strings.Contains(where, "grpc"))
				delete(sa, "address")
			}
		}
		if name, ok := v["name"].(string); ok && strings.HasPrefix(name, "meterr-auth") && strings.HasSuffix(where, "backendRefs[]") {
			ns, _ := v["namespace"].(string)
			port, _ := v["port"].(float64)
			c.n++
			svc, found := c.services[name]
			switch {
			case !found:
				c.t.Errorf("%s: backendRef to Service %q, not in config/", where, name)
			case ns != svc.namespace:
				c.t.Errorf("%s: backendRef to %s in namespace %q; it is in %s", where, name, ns, svc.namespace)
			default:
				c.port(where, name, name, int(port), grpc)
			}
			return
		}
		for k, e := range v {
			c.walk(where+"."+k, e, grpc)
		}
	case []any:
		for _, e := range v {
			c.walk(where+"[]", e, grpc)
		}
	case string:
		c.text(where, v, grpc)
	}
}

// TestGuidesMatchManifests parses every YAML block of the integration guides
// and fails when a Service host, namespace or port of the auth server does
// not match config/; references in other blocks and the prose are checked
// as text.
func TestGuidesMatchManifests(t *testing.T) {
	c := &checker{t: t, services: shippedServices(t)}
	yamlBlocks := 0
	for _, f := range guides(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(f, "../../")
		rest := string(raw)
		for i, m := range fence.FindAllStringSubmatch(rest, -1) {
			where := fmt.Sprintf("%s block %d", name, i+1)
			if m[1] != "yaml" {
				continue
			}
			for j, doc := range strings.Split(m[2], "\n---\n") {
				var v any
				if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
					t.Errorf("%s (document %d) is not valid YAML: %v", where, j+1, err)
					continue
				}
				yamlBlocks++
				c.walk(where, v, false)
			}
		}
		// Everything outside YAML blocks, as text.
		c.text(name, fence.ReplaceAllStringFunc(rest, func(b string) string {
			if strings.HasPrefix(b, "```yaml") {
				return ""
			}
			return b
		}), false)
	}
	if yamlBlocks < 8 || c.n < 10 {
		t.Fatalf("only %d YAML documents and %d references checked: is the parser still finding them?", yamlBlocks, c.n)
	}
	t.Logf("%d YAML documents, %d Service references checked", yamlBlocks, c.n)
}

// The checker catches what it is for.
func TestGuideCheckerCatches(t *testing.T) {
	for _, bad := range []string{
		"service: meterr-auth.meterr-system.svc.cluster.local\nport: 8080\n",
		"uri: http://meterr-auth-server.meterr-system.svc:8080\n",
		"grpc:\n  backendRefs:\n  - name: meterr-auth-server\n    namespace: meterr-system\n    port: 80\n",
		"backendRefs:\n- name: meterr-auth-server\n  namespace: default\n  port: 80\n",
		"envoyExtAuthzGrpc:\n  service: meterr-auth-server.meterr-system.svc.cluster.local\n  port: 80\n",
	} {
		ft := &testing.T{}
		c := &checker{t: ft, services: shippedServices(t)}
		var v any
		if err := yaml.Unmarshal([]byte(bad), &v); err != nil {
			t.Fatal(err)
		}
		c.walk("x", v, false)
		if !ft.Failed() {
			t.Errorf("not caught:\n%s", bad)
		}
	}
}

func keys2(m map[string]service) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
