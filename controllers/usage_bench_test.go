package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/controllers"
	"github.com/meterr/meterr-operator/internal/usage"
)

// statusStore is a client.Client of MeterrAPIKeys held in memory, one
// version each, that counts status patches: the writer's scheduling without
// an API server.
type statusStore struct {
	client.Client
	lastUsed map[string]time.Time
	writes   int
}

func (s *statusStore) Get(_ context.Context, k types.NamespacedName, obj client.Object, _ ...client.GetOption) error {
	m := obj.(*authv1alpha1.MeterrAPIKey)
	*m = authv1alpha1.MeterrAPIKey{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name, UID: types.UID(k.Name)},
		Status: authv1alpha1.MeterrAPIKeyStatus{CurrentKey: &authv1alpha1.CurrentKeyStatus{ID: "v"}}}
	if t, ok := s.lastUsed[k.Name]; ok {
		m.Status.CurrentKey.LastUsedAt = &metav1.Time{Time: t}
	}
	return nil
}

func (s *statusStore) Status() client.SubResourceWriter { return statusWriter{s: s} }

type statusWriter struct {
	client.SubResourceWriter
	s *statusStore
}

func (w statusWriter) Patch(_ context.Context, obj client.Object, _ client.Patch, _ ...client.SubResourcePatchOption) error {
	m := obj.(*authv1alpha1.MeterrAPIKey)
	w.s.lastUsed[m.Name] = m.Status.CurrentKey.LastUsedAt.Time
	w.s.writes++
	return nil
}

type allActive struct {
	keys []string
	clk  *clocktesting.FakeClock
}

func (a *allActive) Pull(context.Context) ([]usage.Version, error) {
	now := a.clk.Now().Unix()
	out := make([]usage.Version, len(a.keys))
	for i, k := range a.keys {
		out[i] = usage.Version{Namespace: "ns", Name: k, UID: k, KeyID: "v", LastUsed: now}
	}
	return out, nil
}

// BenchmarkLastUsedLag: N keys all in continuous use, the default interval
// (1m), cap (20/s) and pull period (10s); each iteration is one pull period
// (10 simulated seconds of one-second steps, as Start runs them). Reports the status writes per second and the p99 of
// how far each key's lastUsedAt trails now, sampled every pull after the
// first full cycle (N / cap seconds).
func BenchmarkLastUsedLag(b *testing.B) {
	for _, n := range []int{10_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			clk := clocktesting.NewFakeClock(time.Unix(2_000_000_000, 0))
			src := &allActive{clk: clk}
			for i := range n {
				src.keys = append(src.keys, fmt.Sprint("k", i))
			}
			st := &statusStore{lastUsed: map[string]time.Time{}}
			w := &controllers.UsageWriter{Client: st, Source: src, Clock: clk, Interval: controllers.DefaultLastUsedInterval,
				PullInterval: controllers.DefaultUsagePullInterval, WritesPerSecond: controllers.DefaultLastUsedWritesPerSecond, Log: logr.Discard()}
			warm := time.Duration(float64(n)/controllers.DefaultLastUsedWritesPerSecond) * time.Second
			start := clk.Now()
			var lags []float64
			writes0, t0 := 0, time.Time{}
			for b.Loop() {
				for range controllers.DefaultUsagePullInterval / time.Second {
					clk.Step(time.Second)
					w.Step(context.Background())
				}
				now := clk.Now()
				if now.Sub(start) < warm {
					continue
				}
				if t0.IsZero() {
					writes0, t0 = st.writes, now
				}
				for _, k := range src.keys {
					if t, ok := st.lastUsed[k]; ok {
						lags = append(lags, now.Sub(t).Seconds())
					} else {
						lags = append(lags, now.Sub(start).Seconds())
					}
				}
			}
			if len(lags) == 0 || !clk.Now().After(t0) {
				return
			}
			slices.Sort(lags)
			b.ReportMetric(float64(st.writes-writes0)/clk.Now().Sub(t0).Seconds(), "writes/s")
			b.ReportMetric(lags[len(lags)*99/100], "lag-p99-s")
		})
	}
}
