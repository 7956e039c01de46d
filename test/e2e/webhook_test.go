package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The webhook subcommands, run as a user runs them: a secret in a file, the
// body on standard input, the answer on standard output and in the exit code.
var _ = Describe("meterr-operator webhook", func() {
	It("signs a body, verifies it, and refuses a tampered one", func() {
		secret := filepath.Join(GinkgoT().TempDir(), "whsec")
		Expect(os.WriteFile(secret, []byte("whsec_e2e\n"), 0o600)).To(Succeed())
		body := `{"event":"key.rotated","key_id":"abc"}`
		run := func(stdin string, args ...string) (string, error) {
			cmd := exec.Command(binary, append([]string{"webhook"}, args...)...)
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			Expect(string(out)).NotTo(ContainSubstring("whsec_e2e"), "the secret was printed")
			return strings.TrimSpace(string(out)), err
		}

		sig, err := run(body, "sign", "--secret-file", secret)
		Expect(err).NotTo(HaveOccurred(), sig)
		Expect(sig).To(MatchRegexp(`^t=\d+,v1=[0-9a-f]{64}$`))

		out, err := run(body, "verify", "--secret-file", secret, "--signature", sig)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("ok"))

		out, err = run(strings.Replace(body, "abc", "abd", 1), "verify", "--secret-file", secret, "--signature", sig)
		Expect(err).To(HaveOccurred())
		Expect(err.(*exec.ExitError).ExitCode()).To(Equal(1))
		Expect(out).To(ContainSubstring("signature does not match"))
	})
})
