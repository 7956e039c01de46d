package webhookserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	rbacv1 "k8s.io/api/rbac/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/yaml"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/usage"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// The usage report: only accepted requests count (a refused key is not
// "used"), it needs the token, and since filters.
func TestUsageReport(t *testing.T) {
	good, refused := newKey(t, "production"), newKey(t, "production")
	idx := index.New()
	if err := idx.Upsert("good", newRecord("good", standard(), good), t0); err != nil {
		t.Fatal(err)
	}
	pol := standard()
	pol.Disabled = true
	if err := idx.Upsert("refused", newRecord("refused", pol, refused), t0); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakePassiveClock(t0)
	srv, err := NewServer(ServerConfig{Index: idx, Registerer: prometheus.NewRegistry(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReady(true)
	for key, want := range map[string]int{good: 200, refused: 403} {
		r := httptest.NewRequest(http.MethodGet, request.VerifyPath, nil)
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != want && !(key == refused && w.Code >= 400) {
			t.Fatalf("status %d, want %d", w.Code, want)
		}
	}
	clk.SetTime(t0.Add(time.Minute))
	h := usageHandler(idx, []byte("s3cret"), clk)
	get := func(target, auth string) (*httptest.ResponseRecorder, usage.Report) {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var rep usage.Report
		if w.Code == 200 {
			if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
				t.Fatal(err)
			}
		}
		return w, rep
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret2", "Basic s3cret"} {
		if w, _ := get(usage.Path, auth); w.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", auth, w.Code)
		}
	}
	if w, _ := get(usage.Path+"?since=x", "Bearer s3cret"); w.Code != http.StatusBadRequest {
		t.Errorf("bad since: status %d", w.Code)
	}
	w, rep := get(usage.Path, "Bearer s3cret")
	if w.Code != 200 || rep.Now != t0.Add(time.Minute).Unix() || len(rep.Versions) != 1 {
		t.Fatalf("status %d, report %+v", w.Code, rep)
	}
	v := rep.Versions[0]
	if v.Namespace != "team-a" || v.Name != "good" || v.UID == "" || v.KeyID != apikey.HashOf(good).ID() || v.LastUsed != t0.Unix() {
		t.Errorf("version %+v", v)
	}
	if _, rep := get(usage.Path+"?since="+itoa(t0.Unix()+1), "Bearer s3cret"); len(rep.Versions) != 0 {
		t.Errorf("since after the use lists %+v", rep.Versions)
	}
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

// The data plane stays read-only: the usage report adds no Kubernetes
// permission to the auth server (the generated Role is get, list and watch
// on Secrets in one namespace, nothing else).
func TestAuthServerRoleReadOnly(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config", "rbac", "auth-server", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.Role
	if err := yaml.UnmarshalStrict(b, &role); err != nil {
		t.Fatal(err)
	}
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}}
	if role.Kind != "Role" || role.Namespace == "" || !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("the auth server's role changed: %s %s/%s %+v", role.Kind, role.Namespace, role.Name, role.Rules)
	}
}
