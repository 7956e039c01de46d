package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// clientsNS is this file's namespace, apart from the main suite's.
const clientsNS = "e2e-clients"

// secretVolume mirrors a workload Secret into a directory the way the
// kubelet updates a Secret volume: the data goes into a new timestamped
// directory, a "..data_tmp" symlink to it is renamed over "..data", the
// visible files are symlinks into "..data", and the previous directory is
// removed.
type secretVolume struct{ dir string }

func (v secretVolume) keyFile() string { return filepath.Join(v.dir, "api-key") }

// publish writes one payload (data key -> value) atomically.
func (v secretVolume) publish(data map[string]string) {
	GinkgoHelper()
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	ts, err := os.MkdirTemp(v.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	Expect(err).NotTo(HaveOccurred())
	for name, value := range data {
		Expect(os.WriteFile(filepath.Join(ts, name), []byte(value), 0o644)).To(Succeed())
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	Expect(os.Symlink(filepath.Base(ts), tmp)).To(Succeed())
	Expect(os.Rename(tmp, filepath.Join(v.dir, "..data"))).To(Succeed())
	for name := range data {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			Expect(os.Symlink(filepath.Join("..data", name), link)).To(Succeed())
		}
	}
	if old != "" {
		Expect(os.RemoveAll(filepath.Join(v.dir, old))).To(Succeed())
	}
}

// readSecret returns the workload Secret's data, decoded; the key is
// remembered for the suite's leak check.
func readSecret(name string) map[string]string {
	GinkgoHelper()
	out := kubectl("get", "secret", name, "-n", clientsNS, "-o", "json")
	var s struct {
		Data map[string]string `json:"data"`
	}
	Expect(json.Unmarshal([]byte(out), &s)).To(Succeed())
	data := map[string]string{}
	for k, v := range s.Data {
		raw, err := base64.StdEncoding.DecodeString(v)
		Expect(err).NotTo(HaveOccurred())
		data[k] = string(raw)
	}
	Expect(apikey.Parse(data["api-key"])).To(Succeed(), "the Secret holds no well-formed key")
	Expect(data["METERR_API_KEY"]).To(Equal(data["api-key"]))
	keysSeenMu.Lock()
	keysSeen = append(keysSeen, data["api-key"])
	keysSeenMu.Unlock()
	return data
}

// rotateNow sets spec.rotation.requestedAt to now, as a GitOps pipeline
// would, and returns the Secret's data once it holds a new key.
func rotateNow(name, old string) map[string]string {
	GinkgoHelper()
	time.Sleep(1100 * time.Millisecond) // requestedAt is compared in whole seconds with the key's issue time
	now := time.Now().UTC().Format(time.RFC3339)
	kubectl("patch", "mak", name, "-n", clientsNS, "--type", "merge", "-p",
		fmt.Sprintf(`{"spec":{"rotation":{"requestedAt":%q}}}`, now))
	var data map[string]string
	Eventually(func() string {
		data = readSecret(name)
		return data["api-key"]
	}).WithTimeout(rotationTimeout).WithPolling(50 * time.Millisecond).ShouldNot(Equal(old))
	return data
}

// rotationTimeout is how long a requested rotation may take to reach the
// Secret: a few seconds, plus the manager's minimum interval between
// rotations when it has one.
var rotationTimeout = 20 * time.Second

// minRotationFlag finds a manager flag that delays rotations that come
// faster than a minimum interval, if this build has one.
func minRotationFlag() string {
	out, _ := exec.Command(binary, "manager", "--help").CombinedOutput()
	m := regexp.MustCompile(`--?(min-rotation-interval|rotation-min-interval|minimum-rotation-interval)\b`).FindStringSubmatch(string(out))
	if m == nil {
		return ""
	}
	return "--" + m[1]
}

// lineProc is a helper process that answers one JSON line per line of input,
// or streams JSON lines on its own.
type lineProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	lines  []string
	next   chan string
	done   chan struct{}
	stderr strings.Builder
}

func startLineProc(env []string, name string, args ...string) *lineProc {
	GinkgoHelper()
	p := &lineProc{cmd: exec.Command(name, args...), next: make(chan string, 1<<16), done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1"), env...)
	var err error
	p.stdin, err = p.cmd.StdinPipe()
	Expect(err).NotTo(HaveOccurred())
	stdout, err := p.cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, b: &p.stderr}
	Expect(p.cmd.Start()).To(Succeed())
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			p.next <- sc.Text()
		}
	}()
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// ask sends one command and decodes the answer.
func (p *lineProc) ask(cmd string) map[string]any {
	GinkgoHelper()
	_, err := fmt.Fprintln(p.stdin, cmd)
	Expect(err).NotTo(HaveOccurred())
	var line string
	Eventually(p.next).WithTimeout(30*time.Second).Should(Receive(&line), "no answer to %q; stderr: %s", cmd, p.errors())
	var out map[string]any
	Expect(json.Unmarshal([]byte(line), &out)).To(Succeed(), line)
	Expect(out).NotTo(HaveKey("error"), "stderr: %s", p.errors())
	return out
}

func (p *lineProc) errors() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *lineProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n") + "\n" + p.stderr.String()
}

// stop closes its input and waits for it to exit.
func (p *lineProc) stop() {
	GinkgoHelper()
	_ = p.stdin.Close()
	Eventually(p.done).WithTimeout(30 * time.Second).Should(BeClosed())
	Expect(p.cmd.Wait()).To(Succeed(), p.errors())
}

// workloadLine is one line of test/e2e/workload's output.
type workloadLine struct {
	Worker   int    `json:"worker"`
	Start    int64  `json:"start"`
	End      int64  `json:"end"`
	Status   int    `json:"status"`
	KeyID    string `json:"key_id"`
	Code     string `json:"code"`
	Attempts int32  `json:"attempts"`
	Err      string `json:"err"`
	Reload   string `json:"reload"`
	At       int64  `json:"at"`
}

func pythonBin() string {
	if p := os.Getenv("MTR_PYTHON"); p != "" {
		return p
	}
	return "python3"
}

var _ = Describe("workload clients: pkg/meterrkey and the Node and Python recipes across emergency rotations", Ordered, func() {
	const name = "workload-key"
	var (
		vol     secretVolume
		current map[string]string
		repo    = filepath.Join("..", "..")
	)

	BeforeAll(func() {
		if f := minRotationFlag(); f != "" && !strings.Contains(strings.Join(manager.args, " "), f) {
			By("restarting the manager with " + f + "=1s, for back-to-back rotations")
			args := manager.args
			manager.stop()
			manager.args = append(append([]string{}, args...), f+"=1s")
			manager.start()
			DeferCleanup(func() { manager.stop(); manager.args = args; manager.start() })
			rotationTimeout = time.Minute
		}
		apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", clientsNS))
		// Unlimited, so the request loops never meet a rate limit; overlap
		// 0s: the old key is refused as soon as the new one is delivered.
		apply(fmt.Sprintf(`apiVersion: auth.meterr.ai/v1alpha1
kind: MeterrAPIKey
metadata:
  name: %s
  namespace: %s
spec:
  permissions: [read]
  rateLimit: {tier: enterprise}
  rotation: {overlap: 0s}
`, name, clientsNS))
		kubectl("wait", "--for=condition=Ready", "mak/"+name, "-n", clientsNS, "--timeout=30s")
		vol = secretVolume{dir: filepath.Join(GinkgoT().TempDir(), "meterr")}
		Expect(os.Mkdir(vol.dir, 0o755)).To(Succeed())
		current = readSecret(name)
		vol.publish(current)
		Eventually(func() int { return verify(current["api-key"]).status }).WithTimeout(5 * time.Second).Should(Equal(200))
	})

	It("a Go workload on pkg/meterrkey loses no request while the key is rotated three times with overlap 0s", func() {
		By("building test/e2e/workload")
		bin := filepath.Join(workDir, "workload")
		build := exec.Command("go", "build", "-o", bin, "./test/e2e/workload")
		build.Dir = repo
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		// WaitForNewKey holds the requests refused between the Secret's
		// update and the volume's (the kubelet's delay; here the mirror's).
		w := startLineProc(nil, bin, "--url", authURL+"/v1/auth/verify", "--key-file", vol.keyFile(),
			"--workers", "4", "--interval", "10ms", "--wait-for-new-key", "1m")
		time.Sleep(time.Second)

		type rotation struct {
			oldID, newID    string
			requested, swap time.Time
		}
		var rotations []rotation
		for range 3 {
			old := current["api-key"]
			requested := time.Now() // the patch comes a second later
			current = rotateNow(name, old)
			// The old key is refused now (overlap 0s); the workload's
			// requests with it wait for the volume.
			swap := time.Now()
			vol.publish(current)
			rotations = append(rotations, rotation{apikey.HashOf(old).ID(), apikey.HashOf(current["api-key"]).ID(), requested, swap})
			time.Sleep(1500 * time.Millisecond)
		}
		stopped := time.Now()
		w.stop()

		var requests, retried int
		reloadedAt := map[string]time.Time{}
		var lines []workloadLine
		for _, raw := range strings.Split(strings.TrimSpace(w.output()), "\n") {
			var l workloadLine
			Expect(json.Unmarshal([]byte(raw), &l)).To(Succeed(), raw)
			if l.Reload != "" || l.At != 0 {
				Expect(l.Err).To(BeEmpty(), "the workload could not read the key file")
				reloadedAt[l.Reload] = time.Unix(0, l.At)
				continue
			}
			lines = append(lines, l)
		}
		for _, l := range lines {
			requests++
			Expect(l.Err).To(BeEmpty())
			Expect(l.Status).To(Equal(200), "a request failed: %+v", l)
			Expect(l.Attempts).To(BeNumerically("<=", 2), "a request was sent more than twice: %+v", l)
			if l.Attempts == 2 {
				retried++
			}
		}
		GinkgoWriter.Printf("%d requests, %d retried once, 0 failed\n", requests, retried)
		Expect(requests).To(BeNumerically(">", 100))

		ids := map[string]bool{rotations[0].oldID: true}
		for i, r := range rotations {
			ids[r.newID] = true
			at, ok := reloadedAt[r.newID]
			Expect(ok).To(BeTrue(), "the workload never loaded rotation %d's key", i+1)
			// The watcher, not the one-minute resync, noticed the swap.
			Expect(at.Sub(r.swap)).To(BeNumerically("<", 2*time.Second), "rotation %d's key was loaded %s after the swap", i+1, at.Sub(r.swap))
			GinkgoWriter.Printf("rotation %d: the workload loaded the new key %s after the swap\n", i+1, at.Sub(r.swap))
			end := stopped
			if i+1 < len(rotations) {
				end = rotations[i+1].requested // before the next rotation was requested
			}
			n := 0
			for _, l := range lines {
				if s := time.Unix(0, l.Start); s.After(at) && s.Before(end) {
					n++
					Expect(l.KeyID).To(Equal(r.newID), "a request sent after rotation %d's key was loaded used another key", i+1)
					Expect(l.Attempts).To(Equal(int32(1)))
				}
			}
			Expect(n).To(BeNumerically(">", 10), "too few requests after rotation %d to tell", i+1)
		}
		for _, l := range lines {
			Expect(ids).To(HaveKey(l.KeyID), "a request was answered for a key never delivered")
		}
		keysSeenMu.Lock()
		defer keysSeenMu.Unlock()
		for _, k := range keysSeen {
			Expect(w.output()).NotTo(ContainSubstring(k), "the workload printed a key")
		}
	})

	It("the Node and Python recipes send the current key across a rotation and verify webhooks signed with the current and the previous secret", func() {
		dir := GinkgoT().TempDir()
		secretFile := func(n, v string) string {
			p := filepath.Join(dir, n)
			Expect(os.WriteFile(p, []byte(v+"\n"), 0o600)).To(Succeed())
			return p
		}
		cur, prev, other := secretFile("current", "whsec_current_e2e"), secretFile("previous", "whsec_previous_e2e"), secretFile("other", "whsec_other_e2e")
		env := []string{
			"AUTH_URL=" + authURL,
			"METERR_API_KEY_FILE=" + vol.keyFile(),
			"METERR_API_KEY=",
			"WEBHOOK_SECRET=whsec_current_e2e",
			"WEBHOOK_SECRET_PREVIOUS=whsec_previous_e2e",
		}
		drivers := map[string]*lineProc{
			"node":   startLineProc(env, "node", filepath.Join("testdata", "clients", "driver.mjs")),
			"python": startLineProc(env, pythonBin(), filepath.Join("testdata", "clients", "driver.py")),
		}
		expectVerify := func(status int, keyID, code string) {
			GinkgoHelper()
			for lang, d := range drivers {
				a := d.ask("verify")
				Expect(a["status"]).To(BeNumerically("==", status), "%s: %v", lang, a)
				Expect(a["key_id"]).To(Equal(keyID), "%s: %v", lang, a)
				Expect(a["code"]).To(Equal(code), "%s: %v", lang, a)
			}
		}

		By("calling the auth server with the mounted key")
		expectVerify(200, apikey.HashOf(current["api-key"]).ID(), "")

		By("rotating with overlap 0s: the old key is refused until the volume is updated")
		old := current["api-key"]
		current = rotateNow(name, old)
		Eventually(func() string { return verify(old).code() }).WithTimeout(5 * time.Second).Should(Equal("expired_api_key"))
		expectVerify(401, "", "expired_api_key")

		By("swapping the volume: the same processes pick up the new key")
		vol.publish(current)
		expectVerify(200, apikey.HashOf(current["api-key"]).ID(), "")

		By("verifying webhooks signed by `meterr-operator webhook sign`")
		body := filepath.Join(dir, "body.json")
		Expect(os.WriteFile(body, []byte(`{"event":"key.rotated","data":{"key_id":"0a1b2c3d4e5f"}}`), 0o600)).To(Succeed())
		tampered := filepath.Join(dir, "tampered.json")
		Expect(os.WriteFile(tampered, []byte(`{"event":"key.rotated","data":{"key_id":"0a1b2c3d4e5e"}}`), 0o600)).To(Succeed())
		sign := func(args ...string) string {
			out, err := exec.Command(binary, append([]string{"webhook", "sign", "--body-file", body}, args...)...).Output()
			Expect(err).NotTo(HaveOccurred())
			return strings.TrimSpace(string(out))
		}
		cases := []struct {
			what, body, sig, mode string
			ok                    bool
		}{
			{"signed with the current secret", body, sign("--secret-file", cur), "", true},
			{"signed with the previous secret", body, sign("--secret-file", prev), "", true},
			{"signed by a rotating sender with both", body, sign("--secret-file", other, "--secret-file", cur), "", true},
			{"signed with another secret", body, sign("--secret-file", other), "", false},
			{"a tampered body", tampered, sign("--secret-file", cur), "", false},
			{"the legacy form, not allowed", body, sign("--legacy", "--secret-file", cur), "", false},
			{"the legacy form, allowed", body, sign("--legacy", "--secret-file", prev), "legacy", true},
		}
		for _, c := range cases {
			for lang, d := range drivers {
				Expect(d.ask(strings.TrimSpace("webhook "+c.body+" "+c.sig+" "+c.mode))).To(HaveKeyWithValue("ok", c.ok), "%s: %s", lang, c.what)
			}
		}

		for lang, d := range drivers {
			d.stop()
			keysSeenMu.Lock()
			for _, k := range keysSeen {
				Expect(d.output()).NotTo(ContainSubstring(k), "the %s driver printed a key", lang)
			}
			keysSeenMu.Unlock()
		}
	})
})
