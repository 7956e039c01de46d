package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// tenantKubeconfig makes a user who may do anything with MeterrAPIKeys and
// Secrets in one namespace, and nothing else: a team on a shared cluster.
func tenantKubeconfig(user, namespace string) string {
	apply(fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: tenant
  namespace: %[2]s
rules:
  - apiGroups: [auth.meterr.ai]
    resources: [meterrapikeys]
    verbs: ["*"]
  - apiGroups: [""]
    resources: [secrets]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: tenant
  namespace: %[2]s
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: %[1]s}
`, user, namespace))
	return writeKubeconfig(user, envtest.User{Name: user, Groups: []string{"system:authenticated"}})
}

var _ = Describe("a hostile tenant on a shared cluster", Ordered, func() {
	const victimNS, attackerNS = "victim", "attacker"
	var attacker string

	BeforeAll(func() {
		for _, n := range []string{victimNS, attackerNS} {
			apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", n))
		}
		attacker = tenantKubeconfig("mallory", attackerNS)
	})

	tenant := func(stdin string, args ...string) string {
		out, err := kubectlAs(attacker, stdin, args...)
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return out
	}
	readKey := func(namespace, secret string) string {
		out := kubectl("get", "secret", secret, "-n", namespace, "-o", "jsonpath={.data.api-key}")
		raw, err := base64.StdEncoding.DecodeString(out)
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		k := string(raw)
		ExpectWithOffset(1, apikey.Parse(k) == nil).To(BeTrue(), "Secret %s/%s holds no well-formed key", namespace, secret)
		keysSeenMu.Lock()
		keysSeen = append(keysSeen, k)
		keysSeenMu.Unlock()
		return k
	}
	// decidedAsVictim: the learnt key still verifies as the victim's key,
	// with the victim's permissions and owner.
	decidedAsVictim := func(key string) {
		a := call(http.MethodGet, "/v1/auth/check", key)
		ExpectWithOffset(1, a.status).To(Equal(http.StatusOK))
		ExpectWithOffset(1, a.header.Get("X-Meterr-Key-Name")).To(Equal(victimNS + "/billing"))
		ExpectWithOffset(1, a.header.Get("X-Meterr-Permissions")).To(Equal("read"))
		v := verify(key)
		ExpectWithOffset(1, v.body).To(HaveKeyWithValue("permissions", ConsistOf("read")))
		ExpectWithOffset(1, v.body).To(HaveKeyWithValue("rate_limit", HaveKeyWithValue("limit", BeNumerically("==", 1000))))
	}

	It("cannot adopt another namespace's key through a Secret it hands to its own MeterrAPIKey", func() {
		apply(fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata: {name: billing, namespace: %s}
spec:
  permissions: [read]
  restrictions: {ipAllowlist: [127.0.0.1/32]}
`, victimNS))
		kubectl("wait", "--for=condition=Ready", "mak/billing", "-n", victimNS, "--timeout=30s")
		learnt := readKey(victimNS, "billing")
		Eventually(func() int { return verify(learnt).status }).WithTimeout(10 * time.Second).Should(Equal(http.StatusOK))
		decidedAsVictim(learnt)

		By("the tenant points an admin, unlimited key at a Secret of its own: SecretConflict")
		tenant("", "create", "secret", "generic", "loot", "-n", attackerNS, "--from-literal=x=y")
		tenant(fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata: {name: squatter, namespace: %s}
spec:
  permissions: [admin]
  rateLimit: {tier: enterprise}
  secretName: loot
`, attackerNS), "apply", "-f", "-")
		tenant("", "wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=SecretConflict",
			"mak/squatter", "-n", attackerNS, "--timeout=30s")

		By("then hands that Secret to its key, holding the learnt key")
		uid := strings.TrimSpace(tenant("", "get", "mak", "squatter", "-n", attackerNS, "-o", "jsonpath={.metadata.uid}"))
		b64 := base64.StdEncoding.EncodeToString([]byte(learnt))
		tenant(fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: loot
  namespace: %s
  labels: {app.kubernetes.io/managed-by: meterr-operator}
  ownerReferences:
    - {apiVersion: auth.meterr.ai/v1alpha1, kind: MeterrAPIKey, name: squatter, uid: %s, controller: true}
data:
  api-key: %s
  METERR_API_KEY: %s
`, attackerNS, uid, b64, b64), "replace", "-f", "-")

		By("the squatter gets a fresh key of its own; the learnt key is still the victim's, decided as before")
		tenant("", "wait", "--for=condition=Ready", "mak/squatter", "-n", attackerNS, "--timeout=30s")
		Eventually(func() bool { return readKey(attackerNS, "loot") != learnt }).WithTimeout(10 * time.Second).Should(BeTrue())
		Consistently(func() int { return call(http.MethodGet, "/v1/auth/check", learnt).status }).
			WithTimeout(2 * time.Second).Should(Equal(http.StatusOK))
		decidedAsVictim(learnt)

		By("disabling, then deleting the squatter changes nothing for the victim")
		tenant("", "patch", "mak", "squatter", "-n", attackerNS, "--type=merge", "-p", `{"spec":{"disabled":true}}`)
		tenant("", "wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=Disabled",
			"mak/squatter", "-n", attackerNS, "--timeout=30s")
		decidedAsVictim(learnt)
		tenant("", "delete", "mak", "squatter", "-n", attackerNS, "--wait=true", "--timeout=30s")
		Consistently(func() int { return verify(learnt).status }).WithTimeout(2 * time.Second).Should(Equal(http.StatusOK))
		decidedAsVictim(learnt)
	})

	It("cannot set the operator's own labels through secretTemplate", func() {
		_, err := kubectlAs(attacker, fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata: {name: labels, namespace: %s}
spec:
  permissions: [read]
  secretTemplate:
    labels: {auth.meterr.ai/key-record: "true"}
`, attackerNS), "apply", "-f", "-")
		Expect(err).To(MatchError(And(ContainSubstring("spec.secretTemplate.labels"),
			ContainSubstring("label key auth.meterr.ai/key-record is reserved"))))
	})
})
