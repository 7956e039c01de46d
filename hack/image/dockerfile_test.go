package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// makeImageConfig is the config `make image` gives the operator's image
// (TestMakeImage checks the dockerfile one against the Dockerfile).
func makeImageConfig() v1.Config {
	return v1.Config{
		User:       DefaultUser,
		Entrypoint: []string{"/meterr-operator"},
		Env:        []string{DefaultPath, "SSL_CERT_FILE=" + CABundlePath},
		WorkingDir: "/home/" + DefaultUserName,
		Labels: map[string]string{
			"org.opencontainers.image.title":       "meterr-operator",
			"org.opencontainers.image.description": "Declarative meterr API keys for Kubernetes: operator and auth server",
			"org.opencontainers.image.source":      "https://github.com/meterr/meterr-operator",
			"org.opencontainers.image.version":     testVersion,
			"org.opencontainers.image.revision":    testCommit,
		},
	}
}

// TestDockerfileDrift: the repository's Dockerfile agrees with make image,
// and each way of drifting apart is caught.
func TestDockerfileDrift(t *testing.T) {
	dockerfile := filepath.Join("..", "..", "Dockerfile")
	if p := dockerfileProblems(t, dockerfile, makeImageConfig()); len(p) > 0 {
		t.Fatalf("the Dockerfile disagrees with make image:\n%s", strings.Join(p, "\n"))
	}
	orig, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, old, new string }{
		{"user", "USER 65532:65532", "USER 65532"},
		{"entrypoint", `ENTRYPOINT ["/meterr-operator"]`, `ENTRYPOINT ["/meterr-operator", "manager"]`},
		{"a label's value", `title="meterr-operator"`, `title="meterr"`},
		{"a label missing", " \\\n      org.opencontainers.image.revision=\"${COMMIT}\"", ""},
		{"the base", "FROM gcr.io/distroless/static:nonroot", "FROM gcr.io/distroless/static:latest"},
		{"its own build flags", "make build LOCALBIN=/out", "go build -ldflags=-s -o /out/meterr-operator . && true"},
		{"no version stamp", `VERSION="${VERSION}" COMMIT`, "COMMIT"},
		{"a working directory", "USER 65532:65532", "USER 65532:65532\nWORKDIR /data"},
		{"the auth server's binary missing", "COPY --from=builder /out/meterr-auth-server /meterr-auth-server\n", ""},
		{"a binary from elsewhere", "COPY --from=builder /out/meterr-auth-server /meterr-auth-server", "COPY --from=builder /out/meterr-operator /meterr-auth-server"},
	} {
		t.Run(c.name, func(t *testing.T) {
			changed := strings.Replace(string(orig), c.old, c.new, 1)
			if changed == string(orig) {
				t.Fatalf("%q is not in the Dockerfile", c.old)
			}
			p := filepath.Join(t.TempDir(), "Dockerfile")
			if err := os.WriteFile(p, []byte(changed), 0o644); err != nil {
				t.Fatal(err)
			}
			if len(dockerfileProblems(t, p, makeImageConfig())) == 0 {
				t.Error("not caught")
			}
		})
	}
}
