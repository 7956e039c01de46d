package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meterr/meterr-operator/internal/apikey"
)

var _ = Describe("whois, and the auth server's decision log", Ordered, func() {
	const whoisNS = "e2e-whois"
	var key, keyID string

	// whois runs the binary as a user would, the key (if any) on stdin.
	whois := func(stdin string, args ...string) (stdout, stderr string, exit int) {
		cmd := exec.Command(binary, append([]string{"whois", "--kubeconfig", adminKC}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			exit = ee.ExitCode()
		} else {
			ExpectWithOffset(1, err).NotTo(HaveOccurred())
		}
		ExpectWithOffset(1, out.String()+errOut.String()).NotTo(ContainSubstring(key), "whois printed the key")
		return out.String(), errOut.String(), exit
	}

	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", whoisNS))
		apply(fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata:
  name: fenced
  namespace: %s
spec:
  permissions: [read]
  restrictions:
    ipAllowlist: [10.0.0.0/8]
`, whoisNS))
		kubectl("wait", "--for=condition=Ready", "mak/fenced", "-n", whoisNS, "--timeout=30s")
		out := kubectl("get", "secret", "fenced", "-n", whoisNS, "-o", "jsonpath={.data.api-key}")
		raw, err := base64.StdEncoding.DecodeString(out)
		Expect(err).NotTo(HaveOccurred())
		key = string(raw)
		Expect(apikey.Parse(key)).To(Succeed())
		keysSeenMu.Lock()
		keysSeen = append(keysSeen, key)
		keysSeenMu.Unlock()
		keyID = apikey.HashOf(key).ID()
	})

	It("names the owner, the version and the Ready state of a key given on stdin", func() {
		out, _, exit := whois(key + "\n")
		Expect(exit).To(BeZero())
		Expect(out).To(MatchRegexp(`owner\s+` + whoisNS + `/fenced\n`))
		Expect(out).To(MatchRegexp(`version\s+current`))
		Expect(out).To(MatchRegexp(`ready\s+True \(KeyReady\)`))
		Expect(out).To(MatchRegexp(`ip allowlist\s+10\.0\.0\.0/8`))
		Expect(out).To(MatchRegexp(`limit\s+1000 requests per hour`))
		Expect(out).To(ContainSubstring(keyID))

		// By key id, the same.
		out, _, exit = whois("", "--key-id", keyID)
		Expect(exit).To(BeZero())
		Expect(out).To(MatchRegexp(`owner\s+` + whoisNS + `/fenced\n`))
	})

	It("explains what the auth server would answer from an address, as the running auth server answers", func() {
		out, _, exit := whois(key, "--ip", "192.0.2.7")
		Expect(exit).To(BeZero(), "a refusal still exits 0: the key was found")
		Expect(out).To(MatchRegexp(`answer\s+403 ip_not_allowed: API key not allowed from 192\.0\.2\.7`))
		Expect(out).To(MatchRegexp(`why\s+.*192\.0\.2\.7.*10\.0\.0\.0/8`))

		out, _, exit = whois(key, "--ip", "10.1.2.3")
		Expect(exit).To(BeZero())
		Expect(out).To(MatchRegexp(`answer\s+200 ok: permissions read`))

		// whois decides as the server does: the server sees this test at
		// 127.0.0.1, outside the allowlist.
		var real answer
		Eventually(func() string { real = verify(key); return real.code() }).WithTimeout(5 * time.Second).Should(Equal("ip_not_allowed"))
		type result struct {
			Found    bool `json:"found"`
			Decision struct {
				Status  int    `json:"status"`
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"decision"`
		}
		for _, args := range [][]string{{"--ip", "127.0.0.1", "-o", "json"}, {"--key-id", keyID, "--ip", "127.0.0.1", "-o", "json"}} {
			stdin := key
			if args[0] == "--key-id" {
				stdin = ""
			}
			out, _, exit = whois(stdin, args...)
			Expect(exit).To(BeZero())
			var r result
			Expect(json.Unmarshal([]byte(out), &r)).To(Succeed(), out)
			Expect(r.Found).To(BeTrue())
			Expect(r.Decision.Status).To(Equal(real.status))
			Expect(r.Decision.Code).To(Equal(real.code()))
			Expect(r.Decision.Message).To(Equal(real.body["error"].(map[string]any)["message"]))
		}
	})

	It("says when a key is unknown (exit 3) and refuses a malformed one without repeating it (exit 1)", func() {
		unknown, err := apikey.Generate("production")
		Expect(err).NotTo(HaveOccurred())
		out, _, exit := whois(unknown)
		Expect(exit).To(Equal(3))
		Expect(out).To(MatchRegexp(`version\s+unknown`))
		Expect(out).NotTo(ContainSubstring(unknown))

		typo := []byte(key)
		typo[20] ^= 1
		out, errOut, exit := whois(string(typo))
		Expect(exit).To(Equal(1))
		Expect(errOut).To(ContainSubstring("malformed"))
		Expect(out + errOut).NotTo(ContainSubstring(string(typo)))
	})

	It("logs a refused decision with the address used, the key id and never the key", func() {
		Eventually(func() bool {
			Expect(verify(key).code()).To(Equal("ip_not_allowed"))
			for line := range strings.Lines(authServer.logs()) {
				if strings.Contains(line, `"ip_not_allowed"`) && strings.Contains(line, keyID) &&
					strings.Contains(line, `"client":"127.0.0.1"`) {
					return true
				}
			}
			return false
		}).WithTimeout(10 * time.Second).WithPolling(200 * time.Millisecond).Should(BeTrue())
		Expect(authServer.logs()).NotTo(ContainSubstring(key))
		Expect(authServer.logs()).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString([]byte(key))))
	})
})
