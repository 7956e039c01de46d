// Package buildinfo is the meterr_build_info gauge that both the manager and
// the auth server expose: which build of meterr-operator is running.
package buildinfo

import (
	"errors"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Name is the metric's name.
const Name = "meterr_build_info"

// New returns meterr_build_info{version,commit,goversion}, always 1.
//
// version and commit are the ones main is stamped with at build time
// (-ldflags "-X main.version=... -X main.commit=..."; the Makefile and the
// Dockerfile do it from git). An empty version reads "unknown"; an empty
// commit falls back to the VCS revision the go command recorded in the
// binary (with "-dirty" for a modified tree), and to "unknown" without one
// (e.g. -buildvcs=false, or a build outside a checkout).
func New(version, commit string) prometheus.Collector {
	if version == "" {
		version = "unknown"
	}
	if commit == "" {
		commit = vcsCommit()
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        Name,
		Help:        "Always 1; the labels say which build of meterr-operator is running.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// Register registers the gauge on reg; one already there (a second manager
// in the same process, as in `dev` and the tests) is kept.
func Register(reg prometheus.Registerer, version, commit string) error {
	err := reg.Register(New(version, commit))
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}

func vcsCommit() string {
	commit, dirty := "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if dirty && commit != "unknown" {
		commit += "-dirty"
	}
	return commit
}
