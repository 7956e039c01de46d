// Package gobench holds the hot-path Go benchmarks of `make bench`: the auth
// server's HTTP handler deciding /v1/auth/verify for a known key (hit), an
// unknown well-formed key (miss) and a key with a bad checksum (malformed), at
// 100 and 100,000 indexed keys, beside a bare handler that writes a fixed JSON
// body through the same ResponseWriter (the baseline). They use only the
// exported API of package webhookserver, so they run against whatever that
// package holds.
package gobench_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver"
	"github.com/meterr/meterr-operator/webhookserver/index"
)

// probes is how many distinct keys a benchmark cycles through, so that
// lookups in a large index are not all served from one cache line.
const probes = 1024

// hugeLimit keeps the limiter on the path without ever refusing.
const hugeLimit = 1 << 50

type fixture struct {
	srv                  http.Handler
	hit, miss, malformed []*http.Request
	hitUnlimited         []*http.Request
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[int]*fixture{}
)

func request(key string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v1/auth/verify", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	return r
}

func mustKey(tb testing.TB) string {
	k, err := apikey.Generate(apikey.EnvProduction)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// getFixture builds (once per size) an index of n records, one key each:
// probes/2 of them real keys with a huge hourly limit, probes/2 real keys
// without a limit, the rest filler hashes (cheaper to make than keys, and
// just as good for the map).
func getFixture(tb testing.TB, n int) *fixture {
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f, ok := fixtures[n]; ok {
		return f
	}
	idx := index.New()
	srv, err := webhookserver.NewServer(webhookserver.ServerConfig{Index: idx, Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	// Decisions before the first full sync get 503; the index is complete.
	srv.SetReady(true)
	f := &fixture{srv: srv}
	issued := metav1.NewTime(time.Now().Add(-time.Hour))
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	real := min(n, probes)
	for i := range n {
		name := fmt.Sprintf("mak-%08d", i)
		limit := int64(hugeLimit)
		if i%2 == 1 {
			limit = 0
		}
		rec := &record.Record{
			FormatVersion: record.FormatVersion,
			Owner:         record.Owner{Namespace: "bench", Name: name, UID: types.UID(fmt.Sprintf("uid-%08d", i))},
			Policy:        record.Policy{Permissions: []string{"read", "write"}, Environment: apikey.EnvProduction, RequestsPerHour: limit},
		}
		if i < real {
			k := mustKey(tb)
			rec.Keys = []record.Version{record.NewVersion(k, issued.Time)}
			if limit > 0 {
				f.hit = append(f.hit, request(k))
			} else {
				f.hitUnlimited = append(f.hitUnlimited, request(k))
			}
		} else {
			var h apikey.Hash
			for j := range h {
				h[j] = byte(rng.Uint32())
			}
			rec.Keys = []record.Version{{ID: h.ID(), Hash: h.String(), Hint: "mtr_live_xxxx…", NotBefore: issued}}
		}
		if err := idx.Upsert(name, rec, issued.Time); err != nil {
			tb.Fatal(err)
		}
	}
	for range probes {
		k := mustKey(tb)
		f.miss = append(f.miss, request(k))
		// Same length and alphabet, wrong checksum.
		last := k[len(k)-1]
		bad := byte('0')
		if last == '0' {
			bad = '1'
		}
		f.malformed = append(f.malformed, request(k[:len(k)-1]+string(bad)))
	}
	fixtures[n] = f
	return f
}

// discardWriter is the cheapest ResponseWriter: it keeps the header map (so
// the handler's header work is measured) and drops the body.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

func run(b *testing.B, h http.Handler, reqs []*http.Request, want int) {
	b.Helper()
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		clear(w.h)
		w.status = http.StatusOK
		h.ServeHTTP(w, reqs[i%len(reqs)])
		i++
	}
	if w.status != want {
		b.Fatalf("status %d, want %d", w.status, want)
	}
}

// BenchmarkHandlerVerify is the handler's cost per decision, cycling through
// many keys.
func BenchmarkHandlerVerify(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		f := getFixture(b, n)
		b.Run(fmt.Sprintf("keys=%d/hit", n), func(b *testing.B) { run(b, f.srv, f.hit, http.StatusOK) })
		b.Run(fmt.Sprintf("keys=%d/hit-unlimited", n), func(b *testing.B) { run(b, f.srv, f.hitUnlimited, http.StatusOK) })
		b.Run(fmt.Sprintf("keys=%d/miss", n), func(b *testing.B) { run(b, f.srv, f.miss, http.StatusUnauthorized) })
		b.Run(fmt.Sprintf("keys=%d/malformed", n), func(b *testing.B) { run(b, f.srv, f.malformed, http.StatusUnauthorized) })
	}
}

// BenchmarkHandlerVerifyParallel is the hit path from every P at once: contention
// in the index and the limiter shows here.
func BenchmarkHandlerVerifyParallel(b *testing.B) {
	f := getFixture(b, 100_000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		i := rand.IntN(len(f.hit))
		for pb.Next() {
			clear(w.h)
			f.srv.ServeHTTP(w, f.hit[i%len(f.hit)])
			i++
		}
	})
}

var bareBody = []byte(`{"valid":true,"key_id":"0123456789ab","permissions":["read","write"],"environment":"production",` +
	`"rate_limit":{"limit":1000000000,"remaining":999999999,"reset":"2026-01-01T00:00:00Z"}}` + "\n")

// BenchmarkBareHandler is the baseline: a handler that sets Content-Type and
// writes a fixed body of the same size as a verify answer.
func BenchmarkBareHandler(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(bareBody)
	})
	f := getFixture(b, 100)
	run(b, h, f.hit, http.StatusOK)
}
