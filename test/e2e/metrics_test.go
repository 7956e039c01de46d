package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("the manager's metrics", func() {
	It("are served over HTTPS to callers the API server authorizes, and to nobody else", func() {
		// The certificate is self-signed unless one is mounted.
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a test of authorization, not of the certificate
		get := func(token string) (int, string) {
			req, err := http.NewRequest(http.MethodGet, "https://"+managerMetrics+"/metrics", nil)
			Expect(err).NotTo(HaveOccurred())
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := c.Do(req)
			if err != nil {
				return 0, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		Eventually(func() int { s, _ := get(""); return s }).WithTimeout(30 * time.Second).Should(Equal(http.StatusUnauthorized))

		kubectl("create", "serviceaccount", "scraper", "-n", "meterr-system")
		kubectl("create", "serviceaccount", "stranger", "-n", "meterr-system")
		kubectl("create", "clusterrolebinding", "scraper-metrics", "--clusterrole=meterr-metrics-reader",
			"--serviceaccount=meterr-system:scraper")
		scraper := strings.TrimSpace(kubectl("create", "token", "scraper", "-n", "meterr-system"))
		stranger := strings.TrimSpace(kubectl("create", "token", "stranger", "-n", "meterr-system"))

		status, _ := get("not-a-token")
		Expect(status).To(Equal(http.StatusUnauthorized))
		status, _ = get(stranger)
		Expect(status).To(Equal(http.StatusForbidden))
		Eventually(func() int { s, _ := get(scraper); return s }).WithTimeout(20 * time.Second).Should(Equal(http.StatusOK))
		_, body := get(scraper)
		Expect(body).To(And(ContainSubstring("meterr_keys{"), ContainSubstring("meterr_key_rotation_due_seconds_bucket"),
			ContainSubstring("controller_runtime_reconcile_total")))
	})
})
