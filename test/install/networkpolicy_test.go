package install

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Who may reach a port, by the container port's name: the namespaces a
// NetworkPolicy must admit it from (a namespaceSelector with this label set
// to "true"). Ports not named here need only be admitted from someone.
var portAudience = map[string]string{
	"http":    "meterr.ai/gateway",
	"grpc":    "meterr.ai/gateway",
	"metrics": "meterr.ai/metrics",
}

// The only egress rules allowed without a `to:` (any address): the API
// server's ports, the fallback when its addresses are unknown, and Redis's
// port when the pod has a Redis URL and no peers were named. (An ipBlock of
// 0.0.0.0/0 would not do: Cilium never matches it to pods or nodes.)
var (
	apiServerFallbackPorts = []int32{443, 6443}
	redisPorts             = []int32{6379}
)

// TestNetworkPolicyAdmitsServedPorts renders the chart (with several
// combinations of values) and config/ (config/default, and with every
// component), and checks that every pod is isolated by a NetworkPolicy
// that admits each port the pod serves: its container ports, the ports its
// Services send to, and the ports its listen flags open; a port only the
// kubelet's probes use is exempt (probes come from the node, which
// NetworkPolicy implementations admit). It also checks who is admitted
// (gateways on http and grpc, Prometheus on metrics) and that every egress
// rule names its peers.
func TestNetworkPolicyAdmitsServedPorts(t *testing.T) {
	allOn := filepath.Join(chartDir, "ci", "all-on-values.yaml")
	chartCases := []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"all-on", []string{"-f", allOn}},
		{"gRPC off", []string{"--set", "authServer.grpc.enabled=false"}},
		{"gRPC on another port", []string{"--set", "authServer.grpc.port=9443"}},
		{"TLS", []string{"--set", "authServer.tls.enabled=true"}},
		{"gRPC mTLS", []string{"--set", "authServer.tls.enabled=true", "--set", "authServer.grpc.clientCA.enabled=true"}},
		{"Redis, plain metrics", []string{"--set", "authServer.redis.existingSecret=meterr-redis", "--set", "manager.metricsSecure=false"}},
		{"API server pinned", []string{"--set", "networkPolicy.apiServer.cidrs={10.0.0.1/32,192.168.10.0/24}"}},
	}
	for _, c := range chartCases {
		t.Run("chart "+c.name, func(t *testing.T) {
			checkServedPortsAdmitted(t, helmTemplate(t, c.args...))
		})
	}
	t.Run("config/default", func(t *testing.T) {
		checkServedPortsAdmitted(t, kustomize(t, "config/default"))
	})
	t.Run("config/default with every component", func(t *testing.T) {
		entries, err := os.ReadDir(filepath.Join(root, "config", "components"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		checkServedPortsAdmitted(t, kustomizeOverlay(t, "", names...))
	})
	// The patch docs/deploy.md gives to pin the API server's addresses.
	t.Run("config/default with the API server pinned", func(t *testing.T) {
		objs := kustomizeOverlay(t, `patches:
  - target:
      kind: NetworkPolicy
      name: meterr-(auth-server|manager)
    patch: |-
      - op: add
        path: /spec/egress/0/to
        value:
          - ipBlock: {cidr: 10.0.0.10/32}
          - ipBlock: {cidr: 10.0.0.11/32}
`, "redis")
		checkServedPortsAdmitted(t, objs)
		for _, name := range []string{"meterr-auth-server", "meterr-manager"} {
			egress, _ := get(index(objs)["NetworkPolicy/meterr-system/"+name], "spec", "egress").([]any)
			if len(egress) == 0 || !strings.Contains(jsonOf(egress[0]), "10.0.0.11/32") || !strings.Contains(jsonOf(egress[0]), `"port": 6443`) {
				t.Errorf("NetworkPolicy %s: the patch did not pin the API server's rule: %s", name, jsonOf(egress))
			}
		}
	})
}

// kustomizeOverlay builds config/default with the named components and more
// of a kustomization (e.g. patches).
func kustomizeOverlay(t *testing.T, more string, components ...string) []obj {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(root, "config"), filepath.Join(dir, "config")); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay")
	if err := os.Mkdir(overlay, 0o700); err != nil {
		t.Fatal(err)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../config/default\ncomponents:\n"
	for _, c := range components {
		k += "  - ../config/components/" + c + "\n"
	}
	k += more
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	return kustomize(t, overlay)
}

// typed converts a decoded manifest into an API type.
func typed(t *testing.T, o obj, into any) {
	t.Helper()
	b, err := json.Marshal(o)
	if err == nil {
		err = json.Unmarshal(b, into)
	}
	if err != nil {
		t.Fatalf("%s: %v", key(o), err)
	}
}

// servedPod is a Deployment's pod template, as far as the policy goes.
type servedPod struct {
	name, namespace string
	labels          labels.Set
	ports           []corev1.ContainerPort
	// served: container port name or number -> why it is served.
	served map[string][]string
	// redis: it has a Redis URL ($MTR_REDIS_URL).
	redis bool
}

func checkServedPortsAdmitted(t *testing.T, objs []obj) {
	t.Helper()
	var pods []*servedPod
	var services []corev1.Service
	var policies []networkingv1.NetworkPolicy
	for _, o := range objs {
		switch o["kind"] {
		case "Deployment":
			var d appsv1.Deployment
			typed(t, o, &d)
			pods = append(pods, podOf(t, &d))
		case "Service":
			var s corev1.Service
			typed(t, o, &s)
			services = append(services, s)
		case "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			typed(t, o, &p)
			policies = append(policies, p)
		}
	}
	if len(pods) == 0 {
		t.Fatal("no Deployments rendered")
	}
	for _, s := range services {
		for _, p := range pods {
			if s.Namespace != p.namespace || len(s.Spec.Selector) == 0 ||
				!labels.SelectorFromSet(s.Spec.Selector).Matches(p.labels) {
				continue
			}
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				cp, ok := p.containerPort(target)
				if !ok {
					t.Errorf("Service %s port %s sends to %s, which pod %s does not declare", s.Name, sp.Name, target.String(), p.name)
					continue
				}
				p.serve(cp, fmt.Sprintf("Service %s port %s (%d)", s.Name, sp.Name, sp.Port))
			}
		}
	}
	for _, p := range pods {
		var ingress, egress []networkingv1.NetworkPolicy
		for _, np := range policies {
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err != nil {
				t.Fatalf("NetworkPolicy %s: %v", np.Name, err)
			}
			if np.Namespace != p.namespace || !sel.Matches(p.labels) {
				continue
			}
			if len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				ingress = append(ingress, np)
			}
			if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				egress = append(egress, np)
			}
		}
		if len(ingress) == 0 || len(egress) == 0 {
			t.Errorf("pod %s: %d NetworkPolicies isolate its ingress and %d its egress; want the policy on by default",
				p.name, len(ingress), len(egress))
			continue
		}
		for _, cp := range p.ports {
			why := p.served[cp.Name]
			if len(why) == 0 {
				t.Logf("pod %s: port %s (%d) is only probed by the kubelet, which comes from the node", p.name, cp.Name, cp.ContainerPort)
				continue
			}
			from := admittedFrom(ingress, cp)
			if len(from) == 0 {
				t.Errorf("pod %s serves port %s (%d) [%s], but no NetworkPolicy admits it", p.name, cp.Name, cp.ContainerPort, strings.Join(why, "; "))
				continue
			}
			if want, ok := portAudience[cp.Name]; ok && !slices.ContainsFunc(from, func(peer networkingv1.NetworkPolicyPeer) bool {
				return peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels[want] == "true"
			}) {
				t.Errorf("pod %s port %s (%d): admitted from %s, not from the namespaces labelled %s=true", p.name, cp.Name, cp.ContainerPort, jsonOf(from), want)
			}
		}
		for _, np := range egress {
			for i, r := range np.Spec.Egress {
				if len(r.To) > 0 {
					continue
				}
				if !onlyPorts(r.Ports, apiServerFallbackPorts) && (!p.redis || !onlyPorts(r.Ports, redisPorts)) {
					t.Errorf("NetworkPolicy %s egress rule %d has no `to:` (any address) on %s; only the API server's ports %v may, and Redis's %v with a Redis URL",
						np.Name, i, jsonOf(r.Ports), apiServerFallbackPorts, redisPorts)
				}
			}
		}
	}
}

// podOf collects a Deployment's container ports and the reasons each is
// served: declared for anyone, or opened by a listen flag.
func podOf(t *testing.T, d *appsv1.Deployment) *servedPod {
	t.Helper()
	p := &servedPod{name: d.Name, namespace: d.Namespace, labels: d.Spec.Template.Labels, served: map[string][]string{}}
	probed := map[string]bool{}
	for _, c := range d.Spec.Template.Spec.Containers {
		p.redis = p.redis || slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "MTR_REDIS_URL" })
		for _, cp := range c.Ports {
			if cp.Name == "" {
				cp.Name = strconv.Itoa(int(cp.ContainerPort))
			}
			p.ports = append(p.ports, cp)
		}
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if pr == nil {
				continue
			}
			switch {
			case pr.HTTPGet != nil:
				probed[pr.HTTPGet.Port.String()] = true
			case pr.TCPSocket != nil:
				probed[pr.TCPSocket.Port.String()] = true
			case pr.GRPC != nil:
				probed[strconv.Itoa(int(pr.GRPC.Port))] = true
			}
		}
		// The listeners the binary opens, whatever the ports say.
		for _, a := range c.Args {
			for _, flag := range []string{"--listen=", "--grpc-listen=", "--metrics-bind-address=", "--health-probe-bind-address="} {
				v, ok := strings.CutPrefix(a, flag)
				if !ok || v == "0" {
					continue
				}
				i := strings.LastIndex(v, ":")
				n, err := strconv.Atoi(v[i+1:])
				if i < 0 || err != nil {
					t.Errorf("%s: cannot read the port of %s", d.Name, a)
					continue
				}
				cp, found := p.containerPort(intstr.FromInt(n))
				if !found {
					t.Errorf("%s listens on %d (%s) but declares no container port for it", d.Name, n, a)
					continue
				}
				if !probed[cp.Name] && !probed[strconv.Itoa(n)] {
					p.serve(cp, "opened by "+a)
				}
			}
		}
	}
	// A declared port nothing probes is for someone else to call.
	for _, cp := range p.ports {
		if !probed[cp.Name] && !probed[strconv.Itoa(int(cp.ContainerPort))] {
			p.serve(cp, "declared container port")
		}
	}
	return p
}

func (p *servedPod) containerPort(port intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range p.ports {
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func (p *servedPod) serve(cp corev1.ContainerPort, why string) {
	p.served[cp.Name] = append(p.served[cp.Name], why)
}

// admittedFrom returns the peers the ingress rules of policies admit to cp
// (a rule without `from` admits everyone: an empty peer).
func admittedFrom(policies []networkingv1.NetworkPolicy, cp corev1.ContainerPort) []networkingv1.NetworkPolicyPeer {
	var from []networkingv1.NetworkPolicyPeer
	for _, np := range policies {
		for _, r := range np.Spec.Ingress {
			if len(r.Ports) > 0 && !slices.ContainsFunc(r.Ports, func(pp networkingv1.NetworkPolicyPort) bool { return portAdmits(pp, cp) }) {
				continue
			}
			if len(r.From) == 0 {
				from = append(from, networkingv1.NetworkPolicyPeer{})
			}
			from = append(from, r.From...)
		}
	}
	return from
}

// portAdmits reports whether a NetworkPolicyPort covers a container port:
// same protocol (TCP when unset), and the port by name, number or range
// (all ports when unset).
func portAdmits(pp networkingv1.NetworkPolicyPort, cp corev1.ContainerPort) bool {
	proto, cproto := corev1.ProtocolTCP, cp.Protocol
	if pp.Protocol != nil {
		proto = *pp.Protocol
	}
	if cproto == "" {
		cproto = corev1.ProtocolTCP
	}
	if proto != cproto {
		return false
	}
	if pp.Port == nil {
		return true
	}
	if pp.Port.Type == intstr.String {
		return pp.Port.StrVal == cp.Name
	}
	hi := pp.Port.IntVal
	if pp.EndPort != nil {
		hi = *pp.EndPort
	}
	return cp.ContainerPort >= pp.Port.IntVal && cp.ContainerPort <= hi
}

// onlyPorts reports whether ports are TCP port numbers from allowed (and at
// least one).
func onlyPorts(ports []networkingv1.NetworkPolicyPort, allowed []int32) bool {
	if len(ports) == 0 {
		return false
	}
	for _, pp := range ports {
		if pp.Port == nil || pp.Port.Type != intstr.Int || pp.EndPort != nil ||
			(pp.Protocol != nil && *pp.Protocol != corev1.ProtocolTCP) || !slices.Contains(allowed, pp.Port.IntVal) {
			return false
		}
	}
	return true
}
