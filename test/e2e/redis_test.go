package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meterr/meterr-operator/test/redistest"
)

// Two auth server replicas sharing one real redis-server count a key's hourly
// limit exactly between them, as a user running several replicas needs.
var _ = Describe("shared rate limits (--redis-url)", Ordered, func() {
	var replicas [2]string // base URLs

	BeforeAll(func() {
		redis := redistest.Start(GinkgoT())
		// Specs may run in any order: the key's namespace may not exist yet.
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns))

		for i := range replicas {
			listen := freeAddr()
			p := startProc(fmt.Sprintf("auth-server-redis-%d", i), "auth-server", "--kubeconfig", authKC,
				"--listen", listen, "--metrics-bind-address", "0", "--redis-url", redis.URL())
			DeferCleanup(p.stop)
			replicas[i] = "http://" + listen
			waitHTTPReady(replicas[i] + "/readyz")
		}
	})

	It("admits exactly the limit across two replicas", func() {
		apply(keyManifest("shared", "  rateLimit:\n    requestsPerHour: 6\n"+
			"  restrictions:\n    domains: [app.example.com]\n"))
		waitReady("shared")
		key := secretKey("shared")

		ask := func(base, origin string) (int, string) {
			req, err := http.NewRequest(http.MethodGet, base+"/v1/auth/verify", nil)
			Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Origin", origin)
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			_ = resp.Body.Close()
			return resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining")
		}
		// A request from another origin is refused before it is counted:
		// a way to wait for both replicas to know the key without spending it.
		for _, base := range replicas {
			Eventually(func() int { s, _ := ask(base, "https://elsewhere.example"); return s }).
				WithTimeout(10 * time.Second).Should(Equal(http.StatusForbidden))
		}

		admitted := 0
		for i := range 12 {
			status, remaining := ask(replicas[i%2], "https://app.example.com")
			switch status {
			case http.StatusOK:
				admitted++
				Expect(remaining).To(Equal(strconv.Itoa(6-admitted)), "request %d", i)
			case http.StatusTooManyRequests:
				Expect(remaining).To(Equal("0"))
			default:
				Fail(fmt.Sprintf("request %d: status %d", i, status))
			}
		}
		Expect(admitted).To(Equal(6), "two replicas together admitted %d of a limit of 6", admitted)
	})
})
