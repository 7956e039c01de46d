package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

const ns = "e2e"

type answer struct {
	status  int
	header  http.Header
	body    map[string]any
	rawBody string
}

func (a answer) code() string {
	if e, ok := a.body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

func call(method, path, key string, headers ...string) answer {
	req, err := http.NewRequest(method, authURL+path, nil)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, rawBody: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func verify(key string) answer { return call(http.MethodGet, "/v1/auth/verify", key) }

// secretKey reads the plaintext a workload would mount. It is remembered for
// the leak check and never printed.
func secretKey(secret string) string {
	out := kubectl("get", "secret", secret, "-n", ns, "-o", "jsonpath={.data.api-key}")
	raw, err := base64.StdEncoding.DecodeString(out)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	k := string(raw)
	ExpectWithOffset(1, apikey.Parse(k) == nil).To(BeTrue(), "Secret %s holds no well-formed key", secret)
	keysSeenMu.Lock()
	keysSeen = append(keysSeen, k)
	keysSeenMu.Unlock()
	return k
}

func waitReady(name string) {
	kubectl("wait", "--for=condition=Ready", "mak/"+name, "-n", ns, "--timeout=30s")
}

func keyManifest(name, extra string) string {
	return fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata:
  name: %s
  namespace: %s
spec:
  permissions: [read]
%s`, name, ns, extra)
}

var _ = Describe("meterr-operator, run as a user would", Ordered, func() {
	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns))
	})

	It("ships least-privilege RBAC: the auth server reads Secrets in the records namespace only", func() {
		_, err := kubectlAs(authKC, "", "get", "secrets", "-n", "meterr-system")
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectlAs(authKC, "", "get", "secrets", "-n", "default")
		Expect(err).To(MatchError(ContainSubstring("forbidden")))
		_, err = kubectlAs(authKC, "", "get", "secrets", "--all-namespaces")
		Expect(err).To(MatchError(ContainSubstring("forbidden")))
		_, err = kubectlAs(authKC, "", "get", "meterrapikeys", "-A")
		Expect(err).To(MatchError(ContainSubstring("forbidden")))
		out, _ := kubectlAs(authKC, "", "auth", "can-i", "create", "secrets", "-n", "meterr-system")
		Expect(strings.TrimSpace(out)).To(Equal("no"))
		out, _ = kubectlAs(managerKC, "", "auth", "can-i", "delete", "pods", "-n", ns)
		Expect(strings.TrimSpace(out)).To(Equal("no"), "the manager touches nothing but keys, Secrets, events and its lease")
	})

	It("issues a key that verifies with the documented answer", func() {
		apply(keyManifest("reader", ""))
		waitReady("reader")
		Expect(kubectl("get", "mak", "-n", ns)).To(And(ContainSubstring("ENVIRONMENT"), ContainSubstring("NEXT ROTATION"),
			ContainSubstring("production"), ContainSubstring("True")))
		key := secretKey("reader")
		Eventually(func() int { return verify(key).status }).WithTimeout(5 * time.Second).Should(Equal(http.StatusOK))
		a := verify(key)
		Expect(a.body).To(HaveKeyWithValue("valid", true))
		Expect(a.body).To(HaveKeyWithValue("environment", "production"))
		Expect(a.body).To(HaveKeyWithValue("permissions", ConsistOf("read")))
		Expect(a.body).To(HaveKeyWithValue("key_id", apikey.HashOf(key).ID()))
		Expect(a.body["rate_limit"]).To(And(HaveKeyWithValue("limit", BeNumerically("==", 1000)), HaveKey("remaining"), HaveKey("reset")))
		Expect(a.header.Get("Content-Type")).To(HavePrefix("application/json"))
		Expect(a.header.Get("X-RateLimit-Limit")).To(Equal("1000"))
		Expect(a.rawBody).NotTo(ContainSubstring(key))
	})

	It("refuses a wrong key, a bad checksum, a missing permission and a forbidden IP with the documented errors", func() {
		key := secretKey("reader")
		unknown, err := apikey.Generate("production")
		Expect(err).NotTo(HaveOccurred())
		a := verify(unknown)
		Expect(a.status).To(Equal(http.StatusUnauthorized))
		Expect(a.code()).To(Equal("invalid_api_key"))
		Expect(a.header.Get("WWW-Authenticate")).To(ContainSubstring("Bearer"))

		typo := []byte(key)
		typo[20] ^= 1 // still base62, the checksum no longer matches
		a = verify(string(typo))
		Expect(a.status).To(Equal(http.StatusUnauthorized))
		Expect(a.code()).To(Equal("invalid_api_key"))

		a = call(http.MethodGet, "/v1/auth/check?permission=write", key)
		Expect(a.status).To(Equal(http.StatusForbidden))
		Expect(a.code()).To(Equal("insufficient_permissions"))
		a = call(http.MethodPost, "/v1/auth/check?permission=read", key)
		Expect(a.status).To(Equal(http.StatusOK))
		Expect(a.header.Get("X-Meterr-Key-Name")).To(Equal(ns + "/reader"))

		apply(keyManifest("fenced", "  restrictions:\n    ipAllowlist: [203.0.113.0/24, 2001:db8::/32]\n"))
		waitReady("fenced")
		fenced := secretKey("fenced")
		Eventually(func() string { return verify(fenced).code() }).WithTimeout(5 * time.Second).Should(Equal("ip_not_allowed"))
		Expect(verify(fenced).status).To(Equal(http.StatusForbidden))
	})

	It("rotates on rotation.requestedAt: both keys work during the overlap, then the old one is expired_api_key", func() {
		// The overlap must outlast the kubectl round-trips between the
		// rotation and the "old key still works" check on a slow machine.
		apply(keyManifest("rotor", "  rotation:\n    overlap: 20s\n"))
		waitReady("rotor")
		old := secretKey("rotor")
		Eventually(func() int { return verify(old).status }).WithTimeout(5 * time.Second).Should(Equal(http.StatusOK))

		time.Sleep(1100 * time.Millisecond) // requestedAt is compared in whole seconds with the key's issue time
		now := time.Now().UTC().Format(time.RFC3339)
		kubectl("patch", "mak", "rotor", "-n", ns, "--type", "merge", "-p", fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, now))
		var fresh string
		Eventually(func() bool { fresh = secretKey("rotor"); return fresh != old }).WithTimeout(10 * time.Second).Should(BeTrue())
		Eventually(func() int { return verify(fresh).status }).WithTimeout(5 * time.Second).Should(Equal(http.StatusOK))
		Expect(verify(old).status).To(Equal(http.StatusOK), "the old key works during the overlap")
		Eventually(func() string { return verify(old).code() }).WithTimeout(40 * time.Second).WithPolling(100 * time.Millisecond).
			Should(Equal("expired_api_key"))
		Expect(verify(fresh).status).To(Equal(http.StatusOK))

		// Re-applying the same manifest never rotates again.
		kubectl("patch", "mak", "rotor", "-n", ns, "--type", "merge", "-p", fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, now))
		Consistently(func() string { return secretKey("rotor") }).WithTimeout(2 * time.Second).Should(Equal(fresh))
	})

	It("limits a key to requestsPerHour: the fourth request is 429 with Retry-After", func() {
		apply(keyManifest("metered", "  rateLimit:\n    requestsPerHour: 3\n"))
		waitReady("metered")
		key := secretKey("metered")
		Eventually(func() int { return call(http.MethodGet, "/healthz", "").status }).Should(Equal(http.StatusOK))
		// The first successful verify spends one request; wait for the record without spending more.
		Eventually(func() string { return verify(key).code() }).WithTimeout(5 * time.Second).Should(BeEmpty())
		Expect(verify(key).status).To(Equal(http.StatusOK))
		Expect(verify(key).status).To(Equal(http.StatusOK))
		a := verify(key)
		Expect(a.status).To(Equal(http.StatusTooManyRequests))
		Expect(a.code()).To(Equal("rate_limit_exceeded"))
		Expect(a.header.Get("Retry-After")).NotTo(BeEmpty())
		Expect(a.header.Get("X-RateLimit-Remaining")).To(Equal("0"))
	})

	It("answers nothing wrong while the auth server restarts, and every valid key works after", func() {
		keys := []string{secretKey("reader"), secretKey("rotor")}
		authServer.stop()
		var wrong atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			defer GinkgoRecover()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, k := range keys {
					req, _ := http.NewRequest(http.MethodGet, authURL+"/v1/auth/verify", nil)
					req.Header.Set("Authorization", "Bearer "+k)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						continue // not listening yet
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
						wrong.Add(1)
					}
				}
				// Every 200 counts against the keys' hourly quota (1,000 on
				// the default tier): an unpaced loop could spend it and get
				// a legitimate 429, which this spec counts as wrong.
				time.Sleep(2 * time.Millisecond)
			}
		})
		authServer.start()
		waitHTTPReady(authURL + "/readyz")
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		Expect(wrong.Load()).To(BeZero(), "a valid key was refused while the auth server started")
		for _, k := range keys {
			Expect(verify(k).status).To(Equal(http.StatusOK))
		}
	})

	It("never breaks a delivered key when the manager is killed in the middle of a batch of rotations", func() {
		const n = 15
		var names []string
		for i := range n {
			name := fmt.Sprintf("batch-%02d", i)
			names = append(names, name)
			apply(keyManifest(name, ""))
		}
		for _, name := range names {
			waitReady(name)
		}
		delivered := map[string]bool{}
		collect := func() {
			for _, name := range names {
				delivered[secretKey(name)] = true
			}
		}
		collect()
		time.Sleep(1100 * time.Millisecond)
		now := time.Now().UTC().Format(time.RFC3339)
		for _, name := range names {
			kubectl("patch", "mak", name, "-n", ns, "--type", "merge", "-p", fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, now))
		}
		time.Sleep(150 * time.Millisecond)
		manager.kill()
		collect()
		manager.start()
		isBatch := map[string]bool{}
		for _, name := range names {
			isBatch[name] = true
		}
		// The new manager first waits out the lease the killed one never
		// released; each poll runs kubectl, so poll slowly and wait long.
		Eventually(func() int {
			collect()
			// One line per key: its name, then the ids of its previous keys, if any.
			out := kubectl("get", "mak", "-n", ns, "-o",
				`jsonpath={range .items[*]}{.metadata.name}{" "}{.status.previousKeys[*].id}{"\n"}{end}`)
			rotated := 0
			for line := range strings.Lines(out) {
				if f := strings.Fields(line); len(f) >= 2 && isBatch[f[0]] {
					rotated++
				}
			}
			return rotated
		}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Equal(n))
		collect()
		Expect(len(delivered)).To(BeNumerically(">=", 2*n))
		for k := range delivered {
			Eventually(func() int { return verify(k).status }).WithTimeout(5*time.Second).Should(Equal(http.StatusOK),
				"a delivered key (id %s) stopped working before its expiry", apikey.HashOf(k).ID())
		}
	})

	It("refuses a deleted key promptly and removes its record; its Secret is owned for garbage collection", func() {
		apply(keyManifest("doomed", ""))
		waitReady("doomed")
		key := secretKey("doomed")
		uid := kubectl("get", "mak", "doomed", "-n", ns, "-o", "jsonpath={.metadata.uid}")
		Eventually(func() int { return verify(key).status }).WithTimeout(5 * time.Second).Should(Equal(http.StatusOK))
		owner := kubectl("get", "secret", "doomed", "-n", ns, "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].uid}/{.metadata.ownerReferences[0].controller}")
		Expect(owner).To(Equal("MeterrAPIKey/" + uid + "/true"))

		kubectl("delete", "mak", "doomed", "-n", ns, "--wait=false")
		start := time.Now()
		Eventually(func() int { return verify(key).status }).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).
			Should(Equal(http.StatusUnauthorized))
		// A loose bound on a shared machine: the latency itself is measured
		// by the benchmark harness, not here.
		elapsed := time.Since(start)
		Expect(elapsed).To(BeNumerically("<", 10*time.Second))
		GinkgoWriter.Printf("deleted key refused after %s\n", elapsed)
		Eventually(func() string {
			out, _ := kubectlAs(adminKC, "", "get", "secret", record.Name(ns, "doomed", typesUID(uid)), "-n", "meterr-system", "--ignore-not-found")
			return out
		}).Should(BeEmpty())
	})

	It("leaks no plaintext key into records, events or either process's logs", func() {
		blobs := map[string]string{
			"records":         kubectl("get", "secrets", "-n", "meterr-system", "-o", "json"),
			"events":          kubectl("get", "events", "-A", "-o", "json"),
			"keys":            kubectl("get", "mak", "-A", "-o", "json"),
			"manager log":     manager.logs(),
			"auth server log": authServer.logs(),
		}
		// Secret data is base64 in JSON: look for both spellings.
		keysSeenMu.Lock()
		defer keysSeenMu.Unlock()
		Expect(keysSeen).NotTo(BeEmpty())
		for where, blob := range blobs {
			for _, k := range keysSeen {
				leaked := strings.Contains(blob, k) || strings.Contains(blob, base64.StdEncoding.EncodeToString([]byte(k)))
				Expect(leaked).To(BeFalse(), "a plaintext key (id %s) appears in the %s", apikey.HashOf(k).ID(), where)
			}
		}
	})
})

func typesUID(s string) types.UID { return types.UID(s) }
