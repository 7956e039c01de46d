package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// The manager's secret-scanning intakes, configured in BeforeSuite through
// these helpers: a GitLab token in a file (a mounted Secret) and a GitHub
// public key document in a file (a mounted ConfigMap), for a key pair made here.
var (
	intakeURL   string
	gitlabToken = "e2e-gitlab-revocation-token"
	githubKey   *ecdsa.PrivateKey
)

const githubKeyID = "e2e-github-key-1"

func intakeListen() string {
	addr := freeAddr()
	intakeURL = "http://" + addr
	return addr
}

func gitlabTokenFile() string {
	path := filepath.Join(workDir, "gitlab-token")
	Expect(os.WriteFile(path, []byte(gitlabToken+"\n"), 0o600)).To(Succeed())
	return path
}

func githubKeysFile() string {
	var err error
	githubKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	der, err := x509.MarshalPKIXPublicKey(&githubKey.PublicKey)
	Expect(err).NotTo(HaveOccurred())
	doc, err := json.Marshal(map[string]any{"public_keys": []any{map[string]any{
		"key_identifier": githubKeyID, "is_current": true,
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}}})
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(workDir, "github-public-keys.json")
	Expect(os.WriteFile(path, doc, 0o600)).To(Succeed())
	return path
}

func intakeCall(method, path string, body []byte, headers ...string) (int, []byte) {
	GinkgoHelper()
	req, err := http.NewRequest(method, intakeURL+path, bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

var _ = Describe("the manager's secret-scanning intakes", Ordered, func() {
	const intakeNS = "e2e-intake"
	readKey := func(secret string) string {
		GinkgoHelper()
		out := kubectl("get", "secret", secret, "-n", intakeNS, "-o", "jsonpath={.data.api-key}")
		raw, err := base64.StdEncoding.DecodeString(out)
		Expect(err).NotTo(HaveOccurred())
		keysSeenMu.Lock()
		keysSeen = append(keysSeen, string(raw))
		keysSeenMu.Unlock()
		return string(raw)
	}

	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", intakeNS))
		for _, n := range []string{"gl", "gh"} {
			apply(fmt.Sprintf("apiVersion: auth.meterr.ai/v1alpha1\nkind: MeterrAPIKey\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  permissions: [read]\n", n, intakeNS))
		}
		kubectl("wait", "--for=condition=Ready", "mak/gl", "mak/gh", "-n", intakeNS, "--timeout=30s")
		Eventually(func() error { // the listener is up
			c, err := net.Dial("tcp", strings.TrimPrefix(intakeURL, "http://"))
			if err == nil {
				c.Close()
			}
			return err
		}).WithTimeout(30 * time.Second).Should(Succeed())
	})

	It("GitLab: revocable types, then revoke_tokens as GitLab sends it; the key is refused and replaced", func() {
		leaked := readKey("gl")
		Expect(verify(leaked).status).To(Equal(http.StatusOK))

		code, _ := intakeCall(http.MethodGet, "/v1/revocable_token_types", nil, "Authorization", "wrong")
		Expect(code).To(Equal(http.StatusUnauthorized))
		code, raw := intakeCall(http.MethodGet, "/v1/revocable_token_types", nil, "Authorization", gitlabToken)
		Expect(code).To(Equal(http.StatusOK))
		var types struct {
			Types []string `json:"types"`
		}
		Expect(json.Unmarshal(raw, &types)).To(Succeed())
		Expect(types.Types).To(HaveLen(1))

		body, _ := json.Marshal([]map[string]string{{"type": types.Types[0], "token": leaked,
			"location": "https://gitlab.example/g/p/-/blob/abc/deploy.env"}})
		code, _ = intakeCall(http.MethodPost, "/v1/revoke_tokens", body, "Authorization", "wrong")
		Expect(code).To(Equal(http.StatusUnauthorized))
		Consistently(func() int { return verify(leaked).status }).WithTimeout(500*time.Millisecond).Should(Equal(http.StatusOK),
			"an unauthenticated report revokes nothing")

		code, _ = intakeCall(http.MethodPost, "/v1/revoke_tokens", body, "Authorization", gitlabToken)
		Expect(code).To(Equal(http.StatusNoContent))
		Eventually(func() string { return verify(leaked).code() }).Should(Equal("invalid_api_key"))
		Eventually(func() string { return readKey("gl") }).ShouldNot(Equal(leaked))
		Expect(verify(readKey("gl")).status).To(Equal(http.StatusOK))
		Eventually(func() string {
			return kubectl("get", "events.events.k8s.io", "-n", intakeNS, "--field-selector", "regarding.name=gl,reason=KeyCompromised", "-o", "jsonpath={.items[*].note}")
		}).Should(And(ContainSubstring("gitlab"), ContainSubstring("deploy.env")))

		By("the same report again: 204, nothing more")
		cur := readKey("gl")
		code, _ = intakeCall(http.MethodPost, "/v1/revoke_tokens", body, "Authorization", gitlabToken)
		Expect(code).To(Equal(http.StatusNoContent))
		Consistently(func() string { return readKey("gl") }).WithTimeout(time.Second).Should(Equal(cur))
	})

	It("GitHub: a signed batch mixing ours and others; feedback labels; unsigned and tampered requests revoke nothing", func() {
		leaked := readKey("gh")
		stranger, err := apikey.Generate("production")
		Expect(err).NotTo(HaveOccurred())
		body, _ := json.Marshal([]map[string]string{
			{"token": leaked, "type": "meterr_api_key", "url": "https://github.com/o/r/blob/main/.env", "source": "content"},
			{"token": stranger, "type": "meterr_api_key", "url": "https://github.com/o/r/blob/main/b", "source": "content"},
		})
		sum := sha256.Sum256(body)
		sig, err := ecdsa.SignASN1(rand.Reader, githubKey, sum[:])
		Expect(err).NotTo(HaveOccurred())
		sigB64 := base64.StdEncoding.EncodeToString(sig)

		code, _ := intakeCall(http.MethodPost, "/v1/leaks/github", body)
		Expect(code).To(Equal(http.StatusUnauthorized))
		tampered := bytes.Replace(body, []byte(".env"), []byte(".enx"), 1)
		code, _ = intakeCall(http.MethodPost, "/v1/leaks/github", tampered,
			"Github-Public-Key-Identifier", githubKeyID, "Github-Public-Key-Signature", sigB64)
		Expect(code).To(Equal(http.StatusUnauthorized))
		Expect(verify(leaked).status).To(Equal(http.StatusOK))

		code, raw := intakeCall(http.MethodPost, "/v1/leaks/github", body,
			"Github-Public-Key-Identifier", githubKeyID, "Github-Public-Key-Signature", sigB64)
		Expect(code).To(Equal(http.StatusOK), string(raw))
		Expect(string(raw)).NotTo(ContainSubstring(leaked))
		var fb []map[string]string
		Expect(json.Unmarshal(raw, &fb)).To(Succeed())
		h := func(s string) string { x := sha256.Sum256([]byte(s)); return hex.EncodeToString(x[:]) }
		Expect(fb).To(ConsistOf(
			map[string]string{"token_hash": h(leaked), "token_type": "meterr_api_key", "label": "true_positive"},
			map[string]string{"token_hash": h(stranger), "token_type": "meterr_api_key", "label": "false_positive"},
		))
		Eventually(func() string { return verify(leaked).code() }).Should(Equal("invalid_api_key"))
		Eventually(func() string { return readKey("gh") }).ShouldNot(Equal(leaked))
	})
})
