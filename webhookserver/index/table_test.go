package index

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// A bucket is one cache line: that is the point of the key table.
func TestBucketIsOneCacheLine(t *testing.T) {
	if n := unsafe.Sizeof(bucket{}); n != 64 {
		t.Fatalf("a bucket is %d bytes, want 64", n)
	}
}

// The key table against a Go map, through random inserts, replacements and
// removals (growth and wrap-around included): every key present is found
// with its value, every key absent is not, and the Robin Hood order holds.
func TestKeyTableAgainstMap(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		r := rand.New(rand.NewPCG(seed, seed))
		tab := newKeyTable()
		tab.seed = r.Uint64()
		want := map[apikey.Hash]uint32{}
		var keys []apikey.Hash
		hashOf := func(i int) apikey.Hash {
			var h apikey.Hash
			for j := range h {
				h[j] = byte(r.Uint32())
			}
			if i >= 0 && i < len(keys) {
				return keys[i]
			}
			return h
		}
		for step := range 20_000 {
			switch op := r.IntN(10); {
			case op < 5 || len(keys) == 0: // insert a new key
				h := hashOf(-1)
				v := uint32(step + 1)
				tab.put(bucket{hash: h, rec: v})
				want[h] = v
				keys = append(keys, h)
			case op < 7: // replace
				h := hashOf(r.IntN(len(keys)))
				v := uint32(step + 1)
				tab.put(bucket{hash: h, rec: v})
				want[h] = v
			default: // remove
				i := r.IntN(len(keys))
				h := keys[i]
				if !tab.remove(&h) {
					t.Fatalf("step %d: remove of a present key failed", step)
				}
				delete(want, h)
				keys[i] = keys[len(keys)-1]
				keys = keys[:len(keys)-1]
				if tab.remove(&h) {
					t.Fatalf("step %d: a removed key removed again", step)
				}
			}
			if step%997 == 0 || step < 200 {
				checkTable(t, &tab, want)
			}
		}
		checkTable(t, &tab, want)
		for range 1000 {
			h := hashOf(-1)
			if tab.find(&h) != nil {
				t.Fatal("an absent key found")
			}
		}
	}
}

func checkTable(t *testing.T, tab *keyTable, want map[apikey.Hash]uint32) {
	t.Helper()
	if tab.n != len(want) {
		t.Fatalf("table holds %d keys, want %d", tab.n, len(want))
	}
	if len(tab.b) > 0 && tab.n*maxLoadDen > len(tab.b)*maxLoadNum {
		t.Fatalf("load %d/%d over the maximum", tab.n, len(tab.b))
	}
	for h, v := range want {
		if b := tab.find(&h); b == nil || b.rec != v {
			t.Fatalf("key %x: %+v, want rec %d", h[:4], b, v)
		}
	}
	// Robin Hood order: along the table, a bucket's distance from home is
	// at most one more than the previous bucket's.
	used := 0
	for i := range tab.b {
		b := &tab.b[i]
		if b.rec == 0 {
			continue
		}
		used++
		prev := i - 1
		if prev < 0 {
			prev = len(tab.b) - 1
		}
		if d := tab.dist(i, b); d > 0 {
			p := &tab.b[prev]
			if p.rec == 0 || tab.dist(prev, p)+1 < d {
				t.Fatalf("bucket %d at distance %d after a bucket at distance %d", i, d, tab.dist(prev, p))
			}
		}
	}
	if used != tab.n {
		t.Fatalf("%d buckets used, n = %d", used, tab.n)
	}
}

// An empty table finds nothing and removes nothing.
func TestKeyTableEmpty(t *testing.T) {
	tab := newKeyTable()
	var h apikey.Hash
	if tab.find(&h) != nil || tab.remove(&h) {
		t.Fatal("an empty table found a key")
	}
}
