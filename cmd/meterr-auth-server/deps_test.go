package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The slim binary links none of what makes the main binary heavy: the
// manager and the controllers, controller-runtime beyond its logger and
// kubeconfig lookup, client-go's clientset, informers and scheme of every
// built-in API group, and the API package whose Scheme var builds that scheme
// at start-up (docs/architecture.md, "Memory of the auth server"). Each of
// them kept megabytes of the binary resident in every replica.
func TestSlimDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"sigs.k8s.io/controller-runtime/pkg/log":           true,
		"sigs.k8s.io/controller-runtime/pkg/internal/log":  true,
		"sigs.k8s.io/controller-runtime/pkg/log/zap":       true,
		"sigs.k8s.io/controller-runtime/pkg/client/config": true,
	}
	banned := []string{
		"github.com/meterr/meterr-operator/controllers",
		"github.com/meterr/meterr-operator/api/",
		"github.com/meterr/meterr-operator/cmd",
		"k8s.io/client-go/kubernetes",
		"k8s.io/client-go/informers",
		"k8s.io/client-go/tools/leaderelection",
		"k8s.io/client-go/discovery",
		"k8s.io/apiextensions-apiserver",
		"k8s.io/api/apps/",
	}
	var n int
	for dep := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		n++
		if strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime") && !allowed[dep] {
			t.Errorf("meterr-auth-server links %s", dep)
		}
		for _, b := range banned {
			if (dep == b || strings.HasPrefix(dep, b+"/") || strings.HasSuffix(b, "/") && strings.HasPrefix(dep, b)) &&
				dep != "github.com/meterr/meterr-operator/cmd/authserver" && dep != "github.com/meterr/meterr-operator/cmd/meterr-auth-server" {
				t.Errorf("meterr-auth-server links %s", dep)
			}
		}
	}
	t.Logf("%d packages", n)
}
