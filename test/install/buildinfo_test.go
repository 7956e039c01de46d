package install

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBuildInfoMetric: both components of a binary stamped with -X
// main.version and -X main.commit expose them in meterr_build_info.
func TestBuildInfoMetric(t *testing.T) {
	t.Parallel()
	kubectl := kubectlBin(t)
	bin := stampedBinary(t)
	kc := controlPlane(t)
	run(t, kubectl, "--kubeconfig", kc, "apply", "--server-side", "-f", "config/crd/bases")

	want := `meterr_build_info{commit="0123abc",goversion="`
	for _, c := range []struct {
		name string
		args []string
	}{
		{"manager", []string{"manager", "--metrics-secure=false", "--health-probe-bind-address=0", "--records-namespace=default"}},
		{"auth-server", []string{"auth-server", "--listen=127.0.0.1:0", "--records-namespace=default"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := freeAddr(t)
			ctx, cancel := context.WithCancel(context.Background())
			cmd := exec.CommandContext(ctx, bin, append(c.args, "--kubeconfig", kc, "--metrics-bind-address="+addr)...)
			var logs strings.Builder
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = cmd.Wait() }()
			var body string
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				resp, err := http.Get("http://" + addr + "/metrics")
				if err != nil {
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if body = string(b); strings.Contains(body, "meterr_build_info") {
					break
				}
			}
			var line string
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, "meterr_build_info{") {
					line = l
				}
			}
			if !strings.HasPrefix(line, want) || !strings.HasSuffix(line, `",version="v9.8.7"} 1`) {
				t.Fatalf("%s: meterr_build_info line %q, want %s...,version=\"v9.8.7\"} 1\nlogs:\n%s", c.name, line, want, logs.String())
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
