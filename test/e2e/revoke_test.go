package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meterr/meterr-operator/internal/apikey"
)

var _ = Describe("meterr-operator revoke: a leaked key dies by the key itself", Ordered, func() {
	const revokeNS = "e2e-revoke"
	var tenantKC, manifestPath string

	readKey := func(secret string) string {
		GinkgoHelper()
		out := kubectl("get", "secret", secret, "-n", revokeNS, "-o", "jsonpath={.data.api-key}")
		raw, err := base64.StdEncoding.DecodeString(out)
		Expect(err).NotTo(HaveOccurred())
		k := string(raw)
		Expect(apikey.Parse(k) == nil).To(BeTrue(), "Secret %s holds no well-formed key", secret)
		keysSeenMu.Lock()
		keysSeen = append(keysSeen, k)
		keysSeenMu.Unlock()
		return k
	}
	// revokeCmd runs the binary as the tenant would, keys on stdin.
	revokeCmd := func(stdin string, args ...string) (string, int) {
		GinkgoHelper()
		cmd := exec.Command(binary, append([]string{"revoke", "--kubeconfig", tenantKC, "--namespace", revokeNS}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		exit := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			exit = ee.ExitCode()
		} else {
			Expect(err).NotTo(HaveOccurred())
		}
		for _, k := range strings.Fields(stdin) {
			Expect(strings.Contains(out.String(), k)).To(BeFalse(), "revoke printed a key")
		}
		return out.String(), exit
	}
	generation := func(name string) string {
		return kubectl("get", "mak", name, "-n", revokeNS, "-o", "jsonpath={.metadata.generation}")
	}
	status := func(name string) map[string]any {
		var m struct {
			Status map[string]any `json:"status"`
		}
		Expect(json.Unmarshal([]byte(kubectl("get", "mak", name, "-n", revokeNS, "-o", "json")), &m)).To(Succeed())
		return m.Status
	}

	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", revokeNS))
		tenantKC = tenantKubeconfig("revoker", revokeNS)
		manifest := fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata:
  name: leaky
  namespace: %[1]s
spec:
  permissions: [read]
---
apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata:
  name: overlapping
  namespace: %[1]s
spec:
  permissions: [read]
  rotation:
    overlap: 1h
`, revokeNS)
		manifestPath = filepath.Join(workDir, "revoke-keys.yaml")
		Expect(os.WriteFile(manifestPath, []byte(manifest), 0o600)).To(Succeed())
		kubectl("apply", "-f", manifestPath) // client-side apply, as a GitOps tool or a person would
		kubectl("wait", "--for=condition=Ready", "mak/leaky", "mak/overlapping", "-n", revokeNS, "--timeout=30s")
	})

	It("refuses the reported current key at once, delivers a replacement, tells the owner, and leaves the spec alone", func() {
		leaked := readKey("leaky")
		Expect(verify(leaked).status).To(Equal(http.StatusOK))
		gen := generation("leaky")

		// A client that keeps calling with the leaked key, as an attacker would.
		start := time.Now()
		refused := make(chan time.Duration, 1)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			defer GinkgoRecover()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if a := verify(leaked); a.status == http.StatusUnauthorized && a.code() == "invalid_api_key" {
					refused <- time.Since(start)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		out, exit := revokeCmd(leaked+"\n", "--location", "https://chat.example/t/42")
		Expect(exit).To(BeZero(), out)
		var took time.Duration
		Eventually(refused).WithTimeout(10 * time.Second).Should(Receive(&took))
		AddReportEntry("report to refusal (one sample; make bench has p50/p99)", took.String())
		fmt.Fprintf(GinkgoWriter, "refused %s after the revoke command started\n", took)

		a := verify(leaked)
		Expect(a.status).To(Equal(http.StatusUnauthorized))
		Expect(a.code()).To(Equal("invalid_api_key"))
		Expect(a.header.Get("WWW-Authenticate")).To(HavePrefix("Bearer"))

		fresh := readKey("leaky")
		Expect(fresh).NotTo(Equal(leaked))
		Expect(verify(fresh).status).To(Equal(http.StatusOK))
		Expect(out).To(ContainSubstring(apikey.HashOf(leaked).ID()))
		Expect(out).To(ContainSubstring(revokeNS + "/leaky"))
		Expect(out).To(ContainSubstring("the current key"))
		Expect(out).To(ContainSubstring("replaced by key " + apikey.HashOf(fresh).ID()))

		Expect(generation("leaky")).To(Equal(gen), "the spec is untouched")
		_, err := kubectlAs(adminKC, "", "diff", "-f", manifestPath)
		Expect(err).NotTo(HaveOccurred(), "kubectl diff shows no drift")

		st := status("leaky")
		Expect(st["compromisedKeys"]).To(ContainElement(And(
			HaveKeyWithValue("id", apikey.HashOf(leaked).ID()), HaveKeyWithValue("source", "cli"), HaveKey("reportedAt"))))
		events := kubectl("get", "events.events.k8s.io", "-n", revokeNS, "--field-selector", "regarding.name=leaky,reason=KeyCompromised", "-o", "jsonpath={.items[*].note}")
		Expect(events).To(ContainSubstring("https://chat.example/t/42"))
		Expect(events).To(ContainSubstring(apikey.HashOf(leaked).ID()))
		Expect(events).NotTo(ContainSubstring(leaked))

		By("the same report again: idempotent")
		out, exit = revokeCmd(leaked + "\n")
		Expect(exit).To(BeZero(), out)
		Expect(out).To(ContainSubstring("already revoked"))
		Expect(readKey("leaky")).To(Equal(fresh), "no second rotation")
		Expect(verify(leaked).code()).To(Equal("invalid_api_key"))
		Expect(generation("leaky")).To(Equal(gen))

		By("after the auth server restarts and relists, the reported key is still refused")
		authServer.kill()
		authServer.start()
		waitHTTPReady(authURL + "/readyz")
		Expect(verify(leaked).code()).To(Equal("invalid_api_key"))
		Expect(verify(fresh).status).To(Equal(http.StatusOK))
	})

	It("answers \"not a key of this cluster\" for an unknown or malformed key, with exit status 3", func() {
		unknown, err := apikey.Generate("production")
		Expect(err).NotTo(HaveOccurred())
		out, exit := revokeCmd(unknown + "\n")
		Expect(exit).To(Equal(3), out)
		Expect(out).To(ContainSubstring("not a key of this cluster"))

		out, exit = revokeCmd("mtr_live_not-a-key\n")
		Expect(exit).To(Equal(3), out)
		Expect(out).To(ContainSubstring("line 1: not a key of this cluster"))
	})

	It("revokes a previous key in its overlap while the current key stays valid", func() {
		old := readKey("overlapping")
		time.Sleep(1100 * time.Millisecond) // requestedAt is compared in whole seconds
		kubectl("patch", "mak", "overlapping", "-n", revokeNS, "--type", "merge", "-p",
			fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, time.Now().UTC().Format(time.RFC3339)))
		var cur string
		Eventually(func() string { cur = readKey("overlapping"); return cur }).WithTimeout(20 * time.Second).ShouldNot(Equal(old))
		Eventually(func() int { return verify(old).status }).Should(Equal(http.StatusOK), "the old key is in its overlap")

		out, exit := revokeCmd(old + "\n")
		Expect(exit).To(BeZero(), out)
		Expect(out).To(ContainSubstring("a previous key"))
		Eventually(func() string { return verify(old).code() }).Should(Equal("invalid_api_key"))
		Expect(verify(cur).status).To(Equal(http.StatusOK))
		Expect(readKey("overlapping")).To(Equal(cur))
	})
})
