package e2e

import (
	"fmt"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Last used (issue 26), with the real binaries: two auth server replicas,
// the manager pulling both.
var _ = Describe("Last used", Ordered, func() {
	BeforeAll(func() {
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns))
	})

	lastUsed := func(name string) string {
		return kubectl("get", "mak", name, "-n", ns, "-o", "jsonpath={.status.currentKey.lastUsedAt}")
	}
	verifyAt := func(listen, key string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+listen+"/v1/auth/verify", nil)
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	It("shows a use through one replica within 60 s, never for an unused key, and never moves back when a replica restarts", func() {
		apply(keyManifest("lu-used", ""))
		apply(keyManifest("lu-never", ""))
		waitReady("lu-used")
		waitReady("lu-never")
		key := secretKey("lu-used")

		Eventually(func() int { return verifyAt(authListen2, key) }, 30*time.Second, 200*time.Millisecond).Should(Equal(http.StatusOK))
		used := time.Now().UTC().Truncate(time.Second)
		var first time.Time
		Eventually(func(g Gomega) {
			s := lastUsed("lu-used")
			g.Expect(s).NotTo(BeEmpty())
			t, err := time.Parse(time.RFC3339, s)
			g.Expect(err).NotTo(HaveOccurred())
			first = t
		}, 60*time.Second, time.Second).Should(Succeed())
		Expect(first).To(BeTemporally("~", used, 5*time.Second))
		Expect(lastUsed("lu-never")).To(BeEmpty(), "a key never used has no lastUsedAt")
		// kubectl shows the column as an age, empty for never.
		Expect(kubectl("get", "mak", "-n", ns)).To(MatchRegexp(`(?m)^NAME\s.*\sLAST USED\s+AGE$`))

		By("restarting the replica that saw the use")
		authServer2.stop()
		authServer2.start()
		waitHTTPReady("http://" + authListen2 + "/readyz")
		Consistently(func() string { return lastUsed("lu-used") }, 15*time.Second, time.Second).
			Should(Equal(first.Format(time.RFC3339)), "lastUsedAt moved after the replica restarted")

		By("a later use through the other replica moves it on")
		Expect(verifyAt(authListen, key)).To(Equal(http.StatusOK))
		Eventually(func() string { return lastUsed("lu-used") }, 60*time.Second, time.Second).
			ShouldNot(Equal(first.Format(time.RFC3339)))
	})
})
