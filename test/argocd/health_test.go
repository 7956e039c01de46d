// Package argocd tests the Argo CD health check shipped in docs/argocd: it
// runs the Lua script in gopher-lua, the interpreter Argo CD itself embeds.
package argocd

import (
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// toLua converts decoded JSON into Lua values, as Argo CD does for obj.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case bool:
		return lua.LBool(x)
	}
	return lua.LNil
}

func health(t *testing.T, script, manifest string) (status, message string) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatal(err)
	}
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		t.Fatalf("running the health check: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the health check returned %v, not a table", L.Get(-1))
	}
	return hs.RawGetString("status").String(), hs.RawGetString("message").String()
}

func TestHealth(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	cond := func(gen int, conds string) string {
		return "metadata: {generation: 2}\nstatus:\n  observedGeneration: " + string(rune('0'+gen)) + "\n  conditions: " + conds
	}
	cases := []struct {
		name, manifest, want string
	}{
		{"no status yet", "metadata: {generation: 1}\n", "Progressing"},
		{"new: the CRD's default status", "metadata: {generation: 1}\nstatus: {observedGeneration: 0}\n", "Progressing"},
		{"issuing (operators before issue 27 wrote this first)", cond(0, `[{type: Reconciling, status: "True", reason: Issuing}, {type: Ready, status: Unknown, reason: Issuing}]`), "Progressing"},
		{"spec not observed yet", cond(1, `[{type: Ready, status: "True", reason: KeyReady}]`), "Progressing"},
		{"ready", cond(2, `[{type: Ready, status: "True", reason: KeyReady, message: delivered}]`), "Healthy"},
		{"rotation delayed, still usable", cond(2, `[{type: Ready, status: "True", reason: RotationDelayed}]`), "Healthy"},
		{"disabled", cond(2, `[{type: Ready, status: "False", reason: Disabled}]`), "Suspended"},
		{"expired", cond(2, `[{type: Ready, status: "False", reason: Expired}]`), "Degraded"},
		{"secret conflict", cond(2, `[{type: Ready, status: "False", reason: SecretConflict}, {type: Stalled, status: "True", reason: SecretConflict, message: taken}]`), "Degraded"},
		{"retrying", cond(2, `[{type: Ready, status: "False", reason: ReconcileError}, {type: Reconciling, status: "True", reason: ReconcileError}]`), "Progressing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := health(t, script, tc.manifest)
			if got != tc.want {
				t.Fatalf("health = %s (%s), want %s", got, msg, tc.want)
			}
		})
	}
}

// TestDocEmbedsScript keeps the ConfigMap snippet in docs/argocd.md equal to
// the tested script.
func TestDocEmbedsScript(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "docs", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "argocd.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	block := between(string(doc), "```yaml\n", "```")
	if err := yaml.Unmarshal([]byte(block), &cm); err != nil {
		t.Fatalf("docs/argocd.md's ConfigMap: %v", err)
	}
	if got := cm.Data["resource.customizations.health.auth.meterr.ai_MeterrAPIKey"]; got != string(script) {
		t.Fatalf("docs/argocd.md's health check differs from docs/argocd/health.lua")
	}
}

func between(s, start, end string) string {
	i := indexOf(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	if j := indexOf(s, end); j >= 0 {
		return s[:j]
	}
	return s
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
