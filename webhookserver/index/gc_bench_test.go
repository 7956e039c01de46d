package index

import (
	"fmt"
	"runtime"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// BenchmarkIndexGC measures what 100,000 loaded records cost the garbage
// collector and the heap: ns/op is one full collection with the index live
// (a running auth server collects a few times a second under load, and each
// collection marks whatever in the index holds pointers); B/record and
// objects/record are the index's live heap.
func BenchmarkIndexGC(b *testing.B) {
	const n = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	idx := New()
	for i := range n {
		var h apikey.Hash
		h[0], h[1], h[2], h[3] = byte(i), byte(i>>8), byte(i>>16), 0xa5
		r := newRecord(fmt.Sprintf("key-%06d", i), standard())
		r.Owner.UID = types.UID(fmt.Sprintf("0f8fad5b-d9cb-469f-a165-%012d", i))
		r.Keys = append(r.Keys, record.Version{ID: h.ID(), Hash: h.String(), NotBefore: metav1.NewTime(t0)})
		if err := idx.Upsert(record.Name(r.Owner.Namespace, r.Owner.Name, r.Owner.UID), r, t0); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/record")
	b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/n, "objects/record")
	runtime.KeepAlive(idx)
}
