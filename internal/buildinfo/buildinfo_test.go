package buildinfo

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func labels(t *testing.T, reg *prometheus.Registry) map[string]string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != Name || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("want one %s series, got %v", Name, mfs)
	}
	m := mfs[0].GetMetric()[0]
	if v := m.GetGauge().GetValue(); v != 1 {
		t.Fatalf("%s = %v, want 1", Name, v)
	}
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

func TestLabels(t *testing.T) {
	for _, tc := range []struct {
		version, commit         string
		wantVersion, wantCommit string
	}{
		{"v0.3.0", "0123456789abcdef0123456789abcdef01234567", "v0.3.0", "0123456789abcdef0123456789abcdef01234567"},
		{"v0.3.0-2-gabcdef0-dirty", "abc", "v0.3.0-2-gabcdef0-dirty", "abc"},
		// Tests build with -buildvcs=false here: no VCS revision to fall back on.
		{"", "", "unknown", ""},
	} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(New(tc.version, tc.commit))
		l := labels(t, reg)
		if l["version"] != tc.wantVersion || l["goversion"] != runtime.Version() {
			t.Errorf("New(%q, %q): labels %v", tc.version, tc.commit, l)
		}
		if tc.wantCommit != "" && l["commit"] != tc.wantCommit {
			t.Errorf("New(%q, %q): commit %q, want %q", tc.version, tc.commit, l["commit"], tc.wantCommit)
		}
		if l["commit"] == "" {
			t.Errorf("New(%q, %q): empty commit label", tc.version, tc.commit)
		}
	}
}

func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 {
		if err := Register(reg, "v1", "c1"); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	if l := labels(t, reg); l["version"] != "v1" || l["commit"] != "c1" {
		t.Fatalf("labels %v", l)
	}
}
