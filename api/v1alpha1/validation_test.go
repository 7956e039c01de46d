package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
)

const samplesDir = "../../config/samples"

var nameSeq atomic.Int64

// uniqueName keeps every object in the shared namespace apart, so entries
// never depend on one another.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, nameSeq.Add(1))
}

// newKey builds a MeterrAPIKey from the YAML of its spec. It is unstructured
// on purpose: a typed object could not carry a string where a number belongs,
// and the point is to send what a user's manifest can contain. An empty spec
// leaves the spec out altogether.
func newKey(specYAML string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(authv1alpha1.GroupVersion.String())
	u.SetKind("MeterrAPIKey")
	u.SetNamespace(namespace)
	u.SetName(uniqueName("key"))
	if specYAML != "" {
		var spec map[string]any
		ExpectWithOffset(1, yaml.Unmarshal([]byte(specYAML), &spec)).To(Succeed(), "test spec is not valid YAML")
		if spec == nil {
			spec = map[string]any{}
		}
		u.Object["spec"] = spec
	}
	return u
}

// expectRefused asserts that the API server refused a write as invalid and
// that its message names the offending field (and says why, when given).
func expectRefused(err error, fieldPath string, because ...string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred(), "the API server accepted a manifest it should refuse (want an error naming %s)", fieldPath)
	GinkgoWriter.Printf("refused: %v\n", err)
	Expect(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)).To(BeTrue(),
		"want an Invalid (422) or BadRequest (400) answer, got %s: %v", apierrors.ReasonForError(err), err)
	Expect(err.Error()).To(ContainSubstring(fieldPath), "the message must name the field")
	for _, b := range because {
		Expect(err.Error()).To(ContainSubstring(b))
	}
}

// getTyped reads an object back through the Go types, which also proves that
// whatever the server stored decodes into them (a controller's informer would
// choke otherwise).
func getTyped(name string) *authv1alpha1.MeterrAPIKey {
	GinkgoHelper()
	key := &authv1alpha1.MeterrAPIKey{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, key)).To(Succeed())
	return key
}

var _ = Describe("MeterrAPIKey validation", func() {
	DescribeTable("refuses an invalid manifest, naming the field",
		func(spec, fieldPath string, because ...string) {
			expectRefused(k8sClient.Create(ctx, newKey(spec)), fieldPath, because...)
		},

		// The spec as a whole.
		Entry("no spec", "", "spec", "Required value"),
		Entry("unknown field (a typo)", "permissions: [read]\npermision: [write]", `spec.permision`, "unknown field"),

		// permissions
		Entry("permissions missing", "{}", "spec.permissions", "Required value"),
		Entry("permissions empty", "permissions: []", "spec.permissions", "at least 1"),
		Entry("permissions with an unknown value", "permissions: [read, delete]", "spec.permissions[1]", `"delete"`),
		Entry("permissions upper case", "permissions: [Read]", "spec.permissions[0]", `"Read"`),
		Entry("permissions with a duplicate", "permissions: [read, read]", "spec.permissions[1]", "Duplicate value"),
		Entry("permissions as a string", "permissions: read", "spec.permissions", "array"),

		// environment
		Entry("environment unknown", "permissions: [read]\nenvironment: prod", "spec.environment", `"prod"`),
		Entry("environment capitalised", "permissions: [read]\nenvironment: Production", "spec.environment", `"Production"`),

		// rateLimit
		Entry("tier unknown", "permissions: [read]\nrateLimit: {tier: gold}", "spec.rateLimit.tier", `"gold"`),
		Entry("requestsPerHour zero", "permissions: [read]\nrateLimit: {requestsPerHour: 0}", "spec.rateLimit.requestsPerHour", "greater than or equal to 1"),
		Entry("requestsPerHour negative", "permissions: [read]\nrateLimit: {requestsPerHour: -5}", "spec.rateLimit.requestsPerHour", "greater than or equal to 1"),
		Entry("requestsPerHour as a string", `permissions: [read]`+"\n"+`rateLimit: {requestsPerHour: "1000"}`, "spec.rateLimit.requestsPerHour", "integer"),
		Entry("requestsPerHour fractional", "permissions: [read]\nrateLimit: {requestsPerHour: 1.5}", "spec.rateLimit.requestsPerHour", "integer"),
		Entry("rateLimit as a string", "permissions: [read]\nrateLimit: pro", "spec.rateLimit", "object"),

		// restrictions.ipAllowlist
		Entry("IPv4 CIDR with host bits set", "permissions: [read]\nrestrictions: {ipAllowlist: [10.0.0.1/8]}", "spec.restrictions.ipAllowlist[0]", "canonical"),
		Entry("IPv6 CIDR not canonical", `permissions: [read]`+"\n"+`restrictions: {ipAllowlist: ["2001:0db8::/32"]}`, "spec.restrictions.ipAllowlist[0]", "canonical"),
		Entry("IPv6 address in upper case", `permissions: [read]`+"\n"+`restrictions: {ipAllowlist: ["2001:DB8::1"]}`, "spec.restrictions.ipAllowlist[0]", "canonical"),
		Entry("IPv4 prefix too long", "permissions: [read]\nrestrictions: {ipAllowlist: [10.0.0.0/33]}", "spec.restrictions.ipAllowlist[0]"),
		Entry("IPv4 with a leading zero", "permissions: [read]\nrestrictions: {ipAllowlist: [10.0.0.010]}", "spec.restrictions.ipAllowlist[0]"),
		Entry("not an address", "permissions: [read]\nrestrictions: {ipAllowlist: [office-network]}", "spec.restrictions.ipAllowlist[0]"),
		Entry("an address range", "permissions: [read]\nrestrictions: {ipAllowlist: [10.0.0.1-10.0.0.9]}", "spec.restrictions.ipAllowlist[0]"),
		Entry("ipAllowlist with a duplicate", "permissions: [read]\nrestrictions: {ipAllowlist: [10.0.0.0/8, 10.0.0.0/8]}", "spec.restrictions.ipAllowlist[1]", "Duplicate value"),

		// restrictions.domains
		Entry("domain with a scheme", "permissions: [read]\nrestrictions: {domains: [\"https://app.example.com\"]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain with a port", "permissions: [read]\nrestrictions: {domains: [\"app.example.com:8443\"]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain with a path", "permissions: [read]\nrestrictions: {domains: [app.example.com/dashboard]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain with a trailing dot", "permissions: [read]\nrestrictions: {domains: [app.example.com.]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain in upper case", "permissions: [read]\nrestrictions: {domains: [App.Example.com]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain not ASCII (must be punycode)", "permissions: [read]\nrestrictions: {domains: [bücher.example]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("wildcard alone", "permissions: [read]\nrestrictions: {domains: [\"*\"]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("wildcard not leading", "permissions: [read]\nrestrictions: {domains: [\"app.*.example.com\"]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain label longer than 63", "permissions: [read]\nrestrictions: {domains: ["+strings.Repeat("a", 64)+".example.com]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),
		Entry("domain with an underscore", "permissions: [read]\nrestrictions: {domains: [my_app.example.com]}", "spec.restrictions.domains[0]", "lower-case ASCII host name"),

		// rotation
		Entry("period shorter than 1h", "permissions: [read]\nrotation: {period: 30m, overlap: 5m}", "spec.rotation.period", "at least 1h"),
		Entry("period in days (not a Go duration)", "permissions: [read]\nrotation: {period: 90d}", "spec.rotation.period"),
		Entry("period as a number", "permissions: [read]\nrotation: {period: 3600}", "spec.rotation.period", "string"),
		Entry("period beyond what a Go duration holds", "permissions: [read]\nrotation: {period: 9999999h}", "spec.rotation.period"),
		Entry("overlap negative", "permissions: [read]\nrotation: {overlap: -1h}", "spec.rotation.overlap"),
		Entry("overlap without a unit", "permissions: [read]\nrotation: {overlap: \"10\"}", "spec.rotation.overlap"),
		Entry("overlap equal to the period", "permissions: [read]\nrotation: {period: 24h, overlap: 24h}", "spec.rotation.overlap", "shorter than rotation.period"),
		Entry("overlap longer than the period", "permissions: [read]\nrotation: {period: 24h, overlap: 1440m}", "spec.rotation.overlap", "shorter than rotation.period"),
		Entry("short period against the default overlap", "permissions: [read]\nrotation: {period: 72h}", "spec.rotation.overlap", "shorter than rotation.period"),
		Entry("long overlap against the default period", "permissions: [read]\nrotation: {overlap: 2400h}", "spec.rotation.overlap", "shorter than rotation.period"),
		Entry("requestedAt not a time", "permissions: [read]\nrotation: {requestedAt: yesterday}", "spec.rotation.requestedAt"),
		Entry("requestedAt without a time zone", "permissions: [read]\nrotation: {requestedAt: \"2025-01-15T12:00:00\"}", "spec.rotation.requestedAt"),
		Entry("requestedAt a date only", "permissions: [read]\nrotation: {requestedAt: \"2025-01-15\"}", "spec.rotation.requestedAt"),

		// expiresAt, disabled
		Entry("expiresAt not a time", "permissions: [read]\nexpiresAt: next-year", "spec.expiresAt"),
		Entry("expiresAt with month 13", "permissions: [read]\nexpiresAt: \"2030-13-01T00:00:00Z\"", "spec.expiresAt"),
		Entry("expiresAt without a time zone", "permissions: [read]\nexpiresAt: \"2030-01-01T00:00:00\"", "spec.expiresAt"),
		Entry("disabled as a string", "permissions: [read]\ndisabled: \"yes\"", "spec.disabled", "boolean"),

		// secretName, secretTemplate
		Entry("secretName in upper case", "permissions: [read]\nsecretName: BillingKey", "spec.secretName", "valid Secret name"),
		Entry("secretName with an underscore", "permissions: [read]\nsecretName: billing_key", "spec.secretName", "valid Secret name"),
		Entry("secretName starting with a dash", "permissions: [read]\nsecretName: -billing", "spec.secretName", "valid Secret name"),
		Entry("secretName longer than 253", "permissions: [read]\nsecretName: "+strings.Repeat("a", 254), "spec.secretName", "253"),
		Entry("secretTemplate label key invalid", "permissions: [read]\nsecretTemplate: {labels: {\"team name\": billing}}", "spec.secretTemplate.labels", "label keys must be qualified names"),
		Entry("secretTemplate label key with two slashes", "permissions: [read]\nsecretTemplate: {labels: {\"example.com/a/b\": x}}", "spec.secretTemplate.labels", "label keys must be qualified names"),
		Entry("secretTemplate annotation key invalid", "permissions: [read]\nsecretTemplate: {annotations: {\"-note\": x}}", "spec.secretTemplate.annotations", "annotation keys must be qualified names"),
	)

	DescribeTable("accepts a valid manifest at the edges of the rules",
		func(spec string) {
			key := newKey(spec)
			Expect(k8sClient.Create(ctx, key)).To(Succeed())
			getTyped(key.GetName())
		},
		Entry("every permission", "permissions: [read, write, admin]"),
		Entry("every environment: development", "permissions: [read]\nenvironment: development"),
		Entry("requestsPerHour 1", "permissions: [read]\nrateLimit: {tier: pro, requestsPerHour: 1}"),
		Entry("canonical addresses and CIDRs",
			`permissions: [read]`+"\n"+`restrictions: {ipAllowlist: ["10.0.0.0/8", "192.168.1.7", "0.0.0.0/0", "2001:db8::/32", "::1", "fd00::/8", "2001:db8::1/128"]}`),
		Entry("host names, punycode and wildcards",
			`permissions: [read]`+"\n"+`restrictions: {domains: ["example.com", "*.example.com", "xn--bcher-kva.example", "localhost", "a-b.c-d.example.org"]}`),
		Entry("the shortest period", "permissions: [read]\nrotation: {period: 1h, overlap: 59m59s}"),
		Entry("an emergency rotation with no overlap", "permissions: [read]\nrotation: {overlap: 0s, requestedAt: \"2025-01-15T12:00:00Z\"}"),
		Entry("a compound duration", "permissions: [read]\nrotation: {period: 720h30m, overlap: 1.5h}"),
		Entry("times with an offset and fractions", "permissions: [read]\nexpiresAt: \"2030-01-01T09:00:00.123+02:00\"\nrotation: {requestedAt: \"2025-01-15T12:00:00-05:00\"}"),
		Entry("a dotted secretName and a template",
			"permissions: [read]\nsecretName: billing.api-key\nsecretTemplate: {labels: {app.kubernetes.io/part-of: billing, team: \"\"}, annotations: {\"reloader.stakater.com/match\": \"true\", note: \"any text: at all\"}}"),
		Entry("a disabled key", "permissions: [admin]\ndisabled: true"),
	)

	It("refuses a malformed duration with one readable error, not a CEL conversion error besides", func() {
		err := k8sClient.Create(ctx, newKey("permissions: [read]\nrotation: {period: 90d, overlap: 1 week}"))
		expectRefused(err, "spec.rotation.period", "should match")
		Expect(err.Error()).To(ContainSubstring("spec.rotation.overlap"))
		Expect(err.Error()).NotTo(ContainSubstring("conversion error"))
	})

	It("fills every default into a minimal manifest", func() {
		key := newKey("permissions: [read]")
		Expect(k8sClient.Create(ctx, key)).To(Succeed())

		got := getTyped(key.GetName())
		Expect(got.Spec.Permissions).To(Equal([]authv1alpha1.Permission{authv1alpha1.PermissionRead}))
		Expect(got.Spec.Environment).To(Equal(authv1alpha1.EnvironmentProduction))
		Expect(got.Spec.RateLimit.Tier).To(Equal(authv1alpha1.TierStandard))
		Expect(got.Spec.RateLimit.RequestsPerHour).To(BeNil())
		Expect(got.Spec.Rotation.Period).NotTo(BeNil())
		Expect(got.Spec.Rotation.Period.Duration).To(Equal(2160 * time.Hour))
		Expect(got.Spec.Rotation.Overlap).NotTo(BeNil())
		Expect(got.Spec.Rotation.Overlap.Duration).To(Equal(168 * time.Hour))
		Expect(got.Spec.Rotation.RequestedAt).To(BeNil())
		Expect(got.Spec.Restrictions).To(BeNil())
		Expect(got.Spec.ExpiresAt).To(BeNil())
		Expect(got.Spec.Disabled).To(BeFalse())
		Expect(got.Spec.SecretName).To(BeEmpty(), "secretName defaults to the resource's name in the controller, not in the schema")

		// The stored form is what GitOps tools diff against: the defaults
		// are written as the short strings users write.
		raw := &unstructured.Unstructured{}
		raw.SetGroupVersionKind(authv1alpha1.GroupVersion.WithKind("MeterrAPIKey"))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(key), raw)).To(Succeed())
		Expect(raw.Object["spec"]).To(Equal(map[string]any{
			"permissions": []any{"read"},
			"environment": "production",
			"rateLimit":   map[string]any{"tier": "standard"},
			"rotation":    map[string]any{"period": "2160h", "overlap": "168h"},
		}))
	})

	Describe("updates", func() {
		var key *unstructured.Unstructured

		BeforeEach(func() {
			key = newKey("permissions: [read]\nenvironment: staging")
			Expect(k8sClient.Create(ctx, key)).To(Succeed())
		})

		It("refuses a change of environment", func() {
			Expect(unstructured.SetNestedField(key.Object, "production", "spec", "environment")).To(Succeed())
			expectRefused(k8sClient.Update(ctx, key), "spec.environment", "immutable")
		})

		It("refuses dropping the environment, which would default it to another one", func() {
			unstructured.RemoveNestedField(key.Object, "spec", "environment")
			expectRefused(k8sClient.Update(ctx, key), "spec.environment", "immutable")
		})

		It("refuses an invalid change, as on create", func() {
			Expect(unstructured.SetNestedField(key.Object, "1h", "spec", "rotation", "period")).To(Succeed())
			expectRefused(k8sClient.Update(ctx, key), "spec.rotation.overlap", "shorter than rotation.period")
		})

		It("accepts changes to everything else, keeping the environment", func() {
			Expect(unstructured.SetNestedStringSlice(key.Object, []string{"read", "write"}, "spec", "permissions")).To(Succeed())
			Expect(unstructured.SetNestedField(key.Object, "pro", "spec", "rateLimit", "tier")).To(Succeed())
			Expect(unstructured.SetNestedField(key.Object, "0s", "spec", "rotation", "overlap")).To(Succeed())
			Expect(unstructured.SetNestedField(key.Object, "2025-01-15T12:00:00Z", "spec", "rotation", "requestedAt")).To(Succeed())
			Expect(unstructured.SetNestedField(key.Object, true, "spec", "disabled")).To(Succeed())
			Expect(k8sClient.Update(ctx, key)).To(Succeed())

			got := getTyped(key.GetName())
			Expect(got.Spec.Environment).To(Equal(authv1alpha1.EnvironmentStaging))
			Expect(got.Spec.Permissions).To(ConsistOf(authv1alpha1.PermissionRead, authv1alpha1.PermissionWrite))
			Expect(got.Spec.Rotation.Overlap.Duration).To(BeZero())
			Expect(got.Spec.Disabled).To(BeTrue())
		})
	})
})

// sample is one file of config/samples, decoded.
type sample struct {
	file string
	obj  *unstructured.Unstructured
}

func loadSamples() []sample {
	GinkgoHelper()
	var kust struct {
		Resources []string `json:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(samplesDir, "kustomization.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(yaml.Unmarshal(data, &kust)).To(Succeed())

	files, err := filepath.Glob(filepath.Join(samplesDir, "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	var onDisk []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			onDisk = append(onDisk, base)
		}
	}
	listed := append([]string(nil), kust.Resources...)
	sort.Strings(listed)
	Expect(listed).To(Equal(onDisk), "config/samples/kustomization.yaml must list every sample")
	Expect(onDisk).NotTo(BeEmpty())

	var out []sample
	for _, f := range onDisk {
		data, err := os.ReadFile(filepath.Join(samplesDir, f))
		Expect(err).NotTo(HaveOccurred())
		obj := map[string]any{}
		Expect(yaml.Unmarshal(data, &obj)).To(Succeed(), f)
		u := &unstructured.Unstructured{Object: obj}
		Expect(u.GetKind()).To(Equal("MeterrAPIKey"), f)
		Expect(u.GetNamespace()).To(BeEmpty(), "%s: samples leave the namespace to whoever applies them", f)
		out = append(out, sample{file: f, obj: u})
	}
	return out
}

var _ = Describe("config/samples", func() {
	It("are accepted and come back with the defaults filled", func() {
		for _, s := range loadSamples() {
			By("creating " + s.file)
			obj := s.obj.DeepCopy()
			obj.SetNamespace(namespace)
			Expect(k8sClient.Create(ctx, obj)).To(Succeed(), s.file)

			var sent authv1alpha1.MeterrAPIKey
			Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(s.obj.Object, &sent)).To(Succeed(), s.file)
			got := getTyped(obj.GetName())

			Expect(got.Spec.Permissions).To(Equal(sent.Spec.Permissions), s.file)
			Expect(got.Spec.Environment).To(Equal(orDefault(sent.Spec.Environment, authv1alpha1.EnvironmentProduction)), s.file)
			Expect(got.Spec.RateLimit.Tier).To(Equal(orDefault(sent.Spec.RateLimit.Tier, authv1alpha1.TierStandard)), s.file)
			Expect(got.Spec.Rotation.Period.Duration).To(Equal(durationOr(sent.Spec.Rotation.Period, 2160*time.Hour)), s.file)
			Expect(got.Spec.Rotation.Overlap.Duration).To(Equal(durationOr(sent.Spec.Rotation.Overlap, 168*time.Hour)), s.file)
			Expect(got.Spec.Restrictions).To(Equal(sent.Spec.Restrictions), s.file)
			Expect(got.Spec.SecretTemplate).To(Equal(sent.Spec.SecretTemplate), s.file)
		}
	})

	It("show what each is named for", func() {
		byFile := map[string]*authv1alpha1.MeterrAPIKey{}
		for _, s := range loadSamples() {
			key := &authv1alpha1.MeterrAPIKey{}
			Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(s.obj.Object, key)).To(Succeed(), s.file)
			byFile[s.file] = key
		}

		ro := byFile["auth_v1alpha1_meterrapikey_production_readonly.yaml"]
		Expect(ro).NotTo(BeNil())
		Expect(ro.Spec.Permissions).To(Equal([]authv1alpha1.Permission{authv1alpha1.PermissionRead}))
		Expect(ro.Spec.Environment).To(BeElementOf(authv1alpha1.Environment(""), authv1alpha1.EnvironmentProduction))

		w := byFile["auth_v1alpha1_meterrapikey_staging_writer.yaml"]
		Expect(w).NotTo(BeNil())
		Expect(w.Spec.Environment).To(Equal(authv1alpha1.EnvironmentStaging))
		Expect(w.Spec.Permissions).To(ConsistOf(authv1alpha1.PermissionRead, authv1alpha1.PermissionWrite))
		Expect(w.Spec.RateLimit.Tier).To(Equal(authv1alpha1.TierPro))
		Expect(w.Spec.Restrictions).NotTo(BeNil())
		Expect(w.Spec.Restrictions.IPAllowlist).To(ContainElement(WithTransform(func(c authv1alpha1.IPOrCIDR) bool {
			return strings.Contains(string(c), ":") && strings.Contains(string(c), "/")
		}, BeTrue())), "an IPv6 CIDR")

		a := byFile["auth_v1alpha1_meterrapikey_enterprise_admin.yaml"]
		Expect(a).NotTo(BeNil())
		Expect(a.Spec.Environment).To(BeElementOf(authv1alpha1.Environment(""), authv1alpha1.EnvironmentProduction))
		Expect(a.Spec.Permissions).To(Equal([]authv1alpha1.Permission{authv1alpha1.PermissionAdmin}))
		Expect(a.Spec.RateLimit.Tier).To(Equal(authv1alpha1.TierEnterprise))
		Expect(a.Spec.Restrictions).NotTo(BeNil())
		Expect(a.Spec.Restrictions.Domains).To(ContainElement(WithTransform(func(d authv1alpha1.Domain) bool {
			return strings.HasPrefix(string(d), "*.")
		}, BeTrue())), "a wildcard domain")
		Expect(a.Spec.Rotation.Period.Duration).To(Equal(720 * time.Hour))
		Expect(a.Spec.Rotation.Overlap.Duration).To(Equal(24 * time.Hour))
		Expect(a.Spec.SecretTemplate).NotTo(BeNil())
		Expect(a.Spec.SecretTemplate.Labels).NotTo(BeEmpty())
		Expect(a.Spec.SecretTemplate.Annotations).NotTo(BeEmpty())
	})
})

func orDefault[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}

func durationOr(d *metav1.Duration, fallback time.Duration) time.Duration {
	if d == nil {
		return fallback
	}
	return d.Duration
}
