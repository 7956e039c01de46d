package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtoolBin returns bin/promtool ($PROMTOOL; make promtool builds it from
// hack/promtool), skipping the test when it is missing unless
// MTR_REQUIRE_PROMTOOL is set (hack/test.sh sets it).
func promtoolBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PROMTOOL")
	if p == "" {
		p = filepath.Join(root, "bin", "promtool")
	} else if !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("MTR_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("promtool not found at %s: run `make promtool`", p)
		}
		t.Skipf("promtool not found at %s (make promtool); skipping", p)
	}
	return p
}

// TestPrometheusRulePromtool: the chart's PrometheusRule, with the default
// selectors and with every value set, is a rule file `promtool check rules`
// accepts (PromQL parsed, durations, templates of the annotations), and
// names only metrics the binaries export.
func TestPrometheusRulePromtool(t *testing.T) {
	promtool := promtoolBin(t)
	for name, args := range map[string][]string{
		"defaults": {"--set", "prometheusRule.enabled=true"},
		"all-on":   {"-f", allOnValues},
	} {
		objs := index(helmTemplate(t, args...))
		rule := objs["PrometheusRule/meterr-system/meterr"]
		if rule == nil {
			t.Fatalf("%s: no PrometheusRule", name)
		}
		raw, err := yaml.Marshal(get(rule, "spec"))
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), name+"-rules.yaml")
		if err := os.WriteFile(file, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		out := run(t, promtool, "check", "rules", file)
		if !strings.Contains(out, "SUCCESS: 8 rules found") {
			t.Errorf("%s: promtool check rules:\n%s", name, out)
		}
	}
}

// TestPrometheusRuleMetricsExist: every meterr_ metric an alert reads is one
// the binaries register.
func TestPrometheusRuleMetricsExist(t *testing.T) {
	raw := jsonOf(get(index(helmTemplate(t, "--set", "prometheusRule.enabled=true"))["PrometheusRule/meterr-system/meterr"], "spec"))
	for _, m := range []string{"meterr_keys{", "meterr_key_rotation_due_seconds_bucket{", "meterr_key_expiry_seconds_bucket{",
		"meterr_auth_limiter_redis_up{", "meterr_auth_hash_conflicts_total{", "meterr_auth_record_errors_total{"} {
		if !strings.Contains(raw, m) {
			t.Errorf("no alert reads %s", strings.TrimSuffix(m, "{"))
		}
		src := strings.TrimSuffix(strings.TrimSuffix(m, "{"), "_bucket")
		if !codeRegisters(t, src) {
			t.Errorf("the alerts read %s, which no binary registers", src)
		}
	}
}

// codeRegisters reports whether a non-test Go file of the module names
// metric as a string.
func codeRegisters(t *testing.T, metric string) bool {
	t.Helper()
	found := false
	for _, dir := range []string{"controllers", "webhookserver", "internal"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if found || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), `"`+metric+`"`) {
				found = true
			}
			return nil
		})
	}
	return found
}
