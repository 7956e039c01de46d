package authz

import (
	"os/exec"
	"strings"
	"testing"
)

// The decision core imports no Kubernetes package, not even through a
// dependency (see doc.go): what decides a request must be readable, and
// testable, without a cluster's types.
func TestNoKubernetesDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/") ||
			strings.HasSuffix(dep, "/internal/record") || strings.Contains(dep, "/webhookserver/") && !strings.HasSuffix(dep, "/webhookserver/authz") {
			t.Errorf("authz depends on %s", dep)
		}
	}
}
