package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The README's first command, `make demo`, runs `meterr-operator dev`: this
// runs it as a user would and pastes the lines it prints.
var _ = Describe("meterr-operator dev (make demo)", func() {
	It("starts everything, prints a curl line that works, and leaves nothing running after Ctrl-C", func() {
		dataDir := filepath.Join(workDir, "dev")
		authAddr := freeAddr()
		cmd := exec.Command(binary, "dev", "--assets-dir", os.Getenv("KUBEBUILDER_ASSETS"),
			"--data-dir", dataDir, "--auth-listen", authAddr)
		var mu sync.Mutex
		var out bytes.Buffer
		stdout, err := cmd.StdoutPipe()
		Expect(err).NotTo(HaveOccurred())
		Expect(cmd.Start()).To(Succeed())
		done := make(chan struct{})
		go func() {
			s := bufio.NewScanner(stdout)
			for s.Scan() {
				mu.Lock()
				out.WriteString(s.Text() + "\n")
				mu.Unlock()
			}
			close(done)
		}()
		printed := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
		Eventually(printed).WithTimeout(60 * time.Second).Should(ContainSubstring("Press Ctrl-C"))

		var curl, getMak string
		for _, line := range strings.Split(printed(), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "curl "):
				curl = line
			case strings.Contains(line, " get mak -n "):
				getMak, _, _ = strings.Cut(line, "#")
			}
		}
		Expect(curl).NotTo(BeEmpty())
		Expect(printed()).To(ContainSubstring(`HTTP 200 {"valid":true`))
		answer, err := exec.Command("bash", "-c", curl).CombinedOutput()
		Expect(err).NotTo(HaveOccurred())
		Expect(string(answer)).To(ContainSubstring(`"valid":true`))
		Expect(strings.Contains(printed(), "mtr_live_") && strings.Contains(printed(), "Bearer mtr_")).To(BeFalse(),
			"dev prints a command that reads the key, never the key")
		list, err := exec.Command("bash", "-c", "KUBECONFIG="+filepath.Join(dataDir, "kubeconfig")+" "+getMak).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(list))
		Expect(string(list)).To(And(ContainSubstring("billing-reader"), ContainSubstring("NEXT ROTATION")))

		children, err := exec.Command("pgrep", "-P", strconv.Itoa(cmd.Process.Pid)).Output()
		Expect(err).NotTo(HaveOccurred())
		pids := strings.Fields(string(children))
		Expect(len(pids)).To(BeNumerically(">=", 2), "etcd and kube-apiserver run as child processes")

		Expect(cmd.Process.Signal(os.Interrupt)).To(Succeed())
		Eventually(done).WithTimeout(60 * time.Second).Should(BeClosed())
		Expect(cmd.Wait()).To(Succeed())
		Expect(printed()).To(ContainSubstring("stopping the local control plane"))
		for _, pid := range pids {
			_, err := os.Stat("/proc/" + pid)
			Expect(os.IsNotExist(err)).To(BeTrue(), "child process %s still runs after Ctrl-C", pid)
		}
		_, err = os.Stat(filepath.Join(dataDir, "kubeconfig"))
		Expect(os.IsNotExist(err)).To(BeTrue(), "the kubeconfig of a stopped control plane is removed")
	})
})
