package webhookserver

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// nopWriter is a ResponseWriter that keeps nothing, so a benchmark measures
// the handler rather than httptest.ResponseRecorder.
type nopWriter struct {
	h      http.Header
	status int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(s int)           { w.status = s }

// benchIndex returns an index of n keys (n-2 random hashes, plus a limited
// and an unlimited real key) and the two real keys.
func benchIndex(b *testing.B, n int) (idx *index.Index, limited, unlimited string) {
	b.Helper()
	idx = index.New()
	limited, unlimited = newKey(b, "production"), newKey(b, "production")
	pol := standard()
	pol.RequestsPerHour = 1 << 60 // never runs out during the benchmark
	if err := idx.Upsert("limited", newRecord("limited", pol, limited), t0); err != nil {
		b.Fatal(err)
	}
	pol.RequestsPerHour = 0
	if err := idx.Upsert("unlimited", newRecord("unlimited", pol, unlimited), t0); err != nil {
		b.Fatal(err)
	}
	var h [32]byte
	for i := range n - 2 {
		_, _ = rand.Read(h[:])
		r := newRecord(fmt.Sprint("r", i), standard())
		r.Keys = []record.Version{{ID: hex.EncodeToString(h[:6]), Hash: hex.EncodeToString(h[:])}}
		if err := idx.Upsert(r.Owner.Name, r, t0); err != nil {
			b.Fatal(err)
		}
	}
	return idx, limited, unlimited
}

func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		idx, limited, unlimited := benchIndex(b, n)
		srv, err := NewServer(ServerConfig{Index: idx, Registerer: prometheus.NewRegistry(),
			Routes: []Route{{Method: "*", Prefix: "/v1/", Permission: "read"}, {Method: "POST", Prefix: "/v1/usage", Permission: "write"}}})
		if err != nil {
			b.Fatal(err)
		}
		srv.SetReady(true)
		miss := newKey(b, "production")
		for _, tc := range []struct {
			name, target, auth string
			want               int
		}{
			{"hit", request.VerifyPath, "Bearer " + limited, 200},
			{"hit-unlimited", request.VerifyPath, "Bearer " + unlimited, 200},
			{"miss", request.VerifyPath, "Bearer " + miss, 401},
			{"malformed", request.VerifyPath, "Bearer " + limited[:len(limited)-2] + "xx", 401},
			{"check-envoy-route", request.CheckPath + "/v1/usage/events", "Bearer " + limited, 200},
		} {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			r.Header.Set("Authorization", tc.auth)
			w := &nopWriter{h: http.Header{}}
			srv.ServeHTTP(w, r)
			if w.status != tc.want {
				b.Fatalf("%s: status %d, want %d", tc.name, w.status, tc.want)
			}
			b.Run(fmt.Sprintf("keys=%d/%s", n, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					srv.ServeHTTP(w, r)
				}
			})
		}
		b.Run(fmt.Sprintf("keys=%d/hit-parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := httptest.NewRequest(http.MethodGet, request.VerifyPath, nil)
				r.Header.Set("Authorization", "Bearer "+limited)
				w := &nopWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					srv.ServeHTTP(w, r)
				}
			})
		})
	}
}
