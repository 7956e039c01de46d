package proxies

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// validator is what go-control-plane's generated validation gives every
// message: Envoy's own proto constraints (required fields, ranges, enums).
type validator interface{ ValidateAll() error }

// parseEnvoy reads YAML into m as Envoy reads its configuration (proto JSON
// mapping, typed_config Any resolved by type URL, unknown fields refused) and
// runs Envoy's proto validation on it.
func parseEnvoy(t *testing.T, what, doc string, m proto.Message) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, m); err != nil {
		t.Fatalf("%s is not a valid %s: %v", what, m.ProtoReflect().Descriptor().FullName(), err)
	}
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

// envoyBlocks returns the YAML blocks of docs/integrations/envoy.md.
func envoyBlocks(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../../docs/integrations/envoy.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range fence.FindAllStringSubmatch(string(raw), -1) {
		if m[1] == "yaml" {
			out = append(out, m[2])
		}
	}
	if len(out) != 3 {
		t.Fatalf("envoy.md has %d YAML blocks, want 3 (gRPC, gRPC over mutual TLS, HTTP)", len(out))
	}
	return out
}

// The Envoy guide's configurations are what Envoy accepts: the gRPC one as a
// whole bootstrap, the HTTP one as its filters and cluster; every typed
// config resolves and passes Envoy's proto validation. (A real Envoy is not
// run here: there is no Envoy package on the build machines.)
func TestEnvoyGuideConfigs(t *testing.T) {
	blocks := envoyBlocks(t)

	var b bootstrapv3.Bootstrap
	parseEnvoy(t, "the gRPC static configuration", blocks[0], &b)
	var authz *extauthzv3.ExtAuthz
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					t.Fatalf("filter %s: %v", f.GetName(), err)
				}
				if err := hcm.ValidateAll(); err != nil {
					t.Fatal(err)
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetName() == "envoy.filters.http.ext_authz" {
						authz = new(extauthzv3.ExtAuthz)
						if err := hf.GetTypedConfig().UnmarshalTo(authz); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
		}
	}
	if authz == nil || authz.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "meterr-auth-grpc" {
		t.Fatalf("no ext_authz filter calling the meterr-auth-grpc cluster: %v", authz)
	}
	if err := authz.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	failsClosed(t, "the gRPC filter", authz, authz.GetGrpcService().GetTimeout().AsDuration())
	found := false
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "meterr-auth-grpc" {
			found = true
			if _, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
				t.Error("the gRPC cluster does not speak HTTP/2")
			}
		}
	}
	if !found {
		t.Error("no meterr-auth-grpc cluster")
	}

	// The HTTP variant: the filter list and the cluster.
	var http struct {
		HTTPFilters []any `json:"http_filters"`
		Clusters    []any `json:"clusters"`
	}
	if err := yaml.Unmarshal([]byte(blocks[2]), &http); err != nil || len(http.HTTPFilters) != 2 || len(http.Clusters) != 1 {
		t.Fatalf("the HTTP block: %v (%d filters, %d clusters)", err, len(http.HTTPFilters), len(http.Clusters))
	}
	for i, f := range http.HTTPFilters {
		doc, _ := yaml.Marshal(f)
		var hf hcmv3.HttpFilter
		parseEnvoy(t, "HTTP variant filter "+strings.Repeat("#", i+1), string(doc), &hf)
		if hf.GetName() == "envoy.filters.http.ext_authz" {
			var a extauthzv3.ExtAuthz
			if err := hf.GetTypedConfig().UnmarshalTo(&a); err != nil {
				t.Fatal(err)
			}
			if err := a.ValidateAll(); err != nil {
				t.Fatal(err)
			}
			failsClosed(t, "the HTTP filter", &a, a.GetHttpService().GetServerUri().GetTimeout().AsDuration())
			if a.GetHttpService().GetPathPrefix() != "/v1/auth/check" {
				t.Errorf("path_prefix %q", a.GetHttpService().GetPathPrefix())
			}
		}
	}
	doc, _ := yaml.Marshal(http.Clusters[0])
	parseEnvoy(t, "HTTP variant cluster", string(doc), &clusterv3.Cluster{})

	// gRPC over mutual TLS: the cluster's transport socket presents a
	// client certificate and checks the auth server's.
	var mtls struct {
		Clusters []any `json:"clusters"`
	}
	if err := yaml.Unmarshal([]byte(blocks[1]), &mtls); err != nil || len(mtls.Clusters) != 1 {
		t.Fatalf("the mutual TLS block: %v (%d clusters)", err, len(mtls.Clusters))
	}
	doc, _ = yaml.Marshal(mtls.Clusters[0])
	var c clusterv3.Cluster
	parseEnvoy(t, "the mutual TLS cluster", string(doc), &c)
	var up tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatalf("the mutual TLS cluster's transport socket: %v", err)
	}
	if err := up.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	ctx := up.GetCommonTlsContext()
	if c.GetName() != "meterr-auth-grpc" || len(ctx.GetTlsCertificates()) != 1 || ctx.GetValidationContext().GetTrustedCa() == nil ||
		!slices.Contains(ctx.GetAlpnProtocols(), "h2") {
		t.Errorf("the mutual TLS cluster lacks a client certificate, the CA or h2: %v", &up)
	}
}

// failsClosed checks what the guide promises when the auth server fails:
// closed, 503 instead of Envoy's default 403, and a timeout of about a
// second (Envoy's default is 200 ms).
func failsClosed(t *testing.T, what string, a *extauthzv3.ExtAuthz, timeout time.Duration) {
	t.Helper()
	if a.GetFailureModeAllow() {
		t.Errorf("%s: failure_mode_allow is true: the guide must fail closed", what)
	}
	if got := a.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("%s: status_on_error %v, want ServiceUnavailable (503)", what, got)
	}
	if timeout < 500*time.Millisecond || timeout > 2*time.Second {
		t.Errorf("%s: timeout %v, want about 1s", what, timeout)
	}
}
