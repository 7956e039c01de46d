package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// A GitOps pipeline applies manifests and expects them to stay applied: no
// diff, no generation bump, no field conflicts with the operator.
var _ = Describe("living alongside GitOps and other controllers", Ordered, func() {
	const gns = "gitops"

	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", gns))
	})

	inNS := func(manifest string) string {
		// The samples carry no namespace; a pipeline would set one.
		return strings.Replace(manifest, "metadata:\n", "metadata:\n  namespace: "+gns+"\n", 1)
	}
	field := func(name, jsonpath string) string {
		return strings.TrimSpace(kubectl("get", "mak", name, "-n", gns, "-o", "jsonpath="+jsonpath))
	}
	noDrift := func(name, manifest, generation string) {
		ExpectWithOffset(1, field(name, "{.metadata.generation}")).To(Equal(generation), "the operator changed the spec of %s", name)
		out, err := kubectlAs(adminKC, manifest, "diff", "-f", "-")
		ExpectWithOffset(1, err).NotTo(HaveOccurred(), "kubectl diff of %s is not empty:\n%s", name, out)
		_, err = kubectlAs(adminKC, manifest, "apply", "--server-side", "--field-manager=argocd-controller", "-f", "-")
		ExpectWithOffset(1, err).NotTo(HaveOccurred(), "a server-side apply of %s by another field manager conflicts", name)
		ExpectWithOffset(1, field(name, "{.metadata.generation}")).To(Equal(generation))
	}

	manifests := func() map[string]string {
		out := map[string]string{}
		files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "auth_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		for _, f := range files {
			b, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			out[filepath.Base(f)] = inNS(string(b))
		}
		out["durations-offsets-falses"] = inNS(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata:
  name: spelled-by-hand
spec:
  permissions: [read, write]
  environment: staging
  disabled: false
  expiresAt: "2099-06-30T12:00:00+02:00"
  rotation:
    period: 720h
    overlap: 90m
  secretTemplate:
    labels: {team: payments, tier: gold}
    annotations: {reloader.stakater.com/match: "true"}
`)
		return out
	}

	It("leaves every applied manifest as applied: generation 1, empty kubectl diff, no conflict for another field manager", func() {
		all := manifests()
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			apply(all[n])
		}
		for _, n := range names {
			name := resourceName(all[n])
			kubectl("wait", "--for=condition=Ready", "mak/"+name, "-n", gns, "--timeout=30s")
			By("no drift for " + n)
			noDrift(name, all[n], "1")
		}
	})

	It("still has no drift after a requestedAt rotation", func() {
		m := manifests()["durations-offsets-falses"]
		before := field("spelled-by-hand", "{.status.currentKey.id}")
		at := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
		rotated := strings.Replace(m, "    overlap: 90m\n", "    overlap: 90m\n    requestedAt: \""+at+"\"\n", 1)
		apply(rotated)
		Eventually(func() string { return field("spelled-by-hand", "{.status.currentKey.id}") }).
			WithTimeout(30 * time.Second).ShouldNot(Equal(before))
		kubectl("wait", "--for=condition=Ready", "mak/spelled-by-hand", "-n", gns, "--timeout=30s")
		noDrift("spelled-by-hand", rotated, "2")
	})

	It("owns only what it sets on the workload Secret: others' labels survive, no write loop, dropped template labels go", func() {
		secret := "spelled-by-hand"
		kubectl("label", "secret", secret, "-n", gns, "policy.example.com/scanned=yes")
		kubectl("annotate", "secret", secret, "-n", gns, "backup.example.com/last=2026-11-30")
		rv := kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.resourceVersion}")
		Consistently(func() string {
			return kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.resourceVersion}")
		}).WithTimeout(10*time.Second).WithPolling(time.Second).Should(Equal(rv), "something rewrites the Secret while nothing changes")
		Expect(kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.labels.policy\\.example\\.com/scanned}")).To(Equal("yes"))
		Expect(kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.annotations.backup\\.example\\.com/last}")).To(Equal("2026-11-30"))

		By("a template label removed from the manifest is removed from the Secret")
		// (A JSON patch: the manifest's fields are co-owned by now by a
		// client-side and a server-side applier, and neither alone removes it.)
		kubectl("patch", "mak", "spelled-by-hand", "-n", gns, "--type=json",
			"-p", `[{"op":"remove","path":"/spec/secretTemplate/labels/tier"}]`)
		Eventually(func() string {
			return kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.labels.tier}")
		}).WithTimeout(30*time.Second).Should(BeEmpty(), func() string {
			return kubectl("get", "secret", secret, "-n", gns, "-o", "yaml", "--show-managed-fields") +
				kubectl("get", "mak", "spelled-by-hand", "-n", gns, "-o", "yaml")
		})
		Expect(kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.labels.team}")).To(Equal("payments"))
		Expect(kubectl("get", "secret", secret, "-n", gns, "-o", "jsonpath={.metadata.labels.policy\\.example\\.com/scanned}")).To(Equal("yes"))
	})
})

// resourceName reads metadata.name from a one-object manifest.
func resourceName(manifest string) string {
	_, rest, ok := strings.Cut(manifest, "\nmetadata:\n")
	Expect(ok).To(BeTrue())
	for _, line := range strings.Split(rest, "\n") {
		if name, ok := strings.CutPrefix(line, "  name: "); ok {
			return strings.TrimSpace(name)
		}
		if !strings.HasPrefix(line, " ") {
			break
		}
	}
	Fail("no metadata.name in manifest")
	return ""
}
