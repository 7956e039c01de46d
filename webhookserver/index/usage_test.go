package index

import (
	"sync"
	"testing"

	"github.com/meterr/meterr-operator/internal/apikey"
)

func lastUsed(t *testing.T, idx *Index, since int64) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, u := range idx.Usage(since) {
		if u.Owner == "" || u.OwnerUID == "" {
			t.Errorf("usage of %s without its owner: %+v", u.KeyID, u)
		}
		out[u.KeyID] = u.LastUsed.Unix()
	}
	return out
}

// A version's last use: marked through the Use of its lookup, never moved
// back, carried over when its record is reloaded (the version changing
// place from current to previous), gone with its record, and a Use kept
// across a reload marks nothing (the caller redoes it by hash).
func TestIndexUsage(t *testing.T) {
	cur, prev := newKey(t, "production"), newKey(t, "production")
	idx := New()
	if err := idx.Upsert("k", newRecord("k", standard(), prev), t0); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, idx, 0); len(got) != 0 {
		t.Fatalf("a version never used is listed: %v", got)
	}
	e, ok := idx.Lookup(apikey.HashOf(prev))
	if !ok {
		t.Fatal("not found")
	}
	if !e.Use.Mark(1000) || !e.Use.Mark(900) {
		t.Fatal("a fresh Use must mark")
	}
	idPrev := apikey.HashOf(prev).ID()
	if got := lastUsed(t, idx, 0); got[idPrev] != 1000 {
		t.Fatalf("last used %v, want %s at 1000 (never back to 900)", got, idPrev)
	}
	if got := lastUsed(t, idx, 1001); len(got) != 0 {
		t.Errorf("since 1001 lists %v", got)
	}

	// A reload that leaves the version in place (a policy change) keeps
	// its Use valid.
	pol := standard()
	pol.RequestsPerHour = 7
	if err := idx.Upsert("k", newRecord("k", pol, prev), t0); err != nil {
		t.Fatal(err)
	}
	if !e.Use.Mark(1100) {
		t.Error("a Use of a version left in place went stale")
	}

	// Rotation: prev becomes the record's second version.
	if err := idx.Upsert("k", newRecord("k", standard(), cur, prev), t0); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, idx, 0); got[idPrev] != 1100 || len(got) != 1 {
		t.Fatalf("after the reload: %v, want only %s at 1100", got, idPrev)
	}
	if e.Use.Mark(2000) {
		t.Error("a Use of a version that moved must report stale")
	}
	if !idx.MarkUsed(apikey.HashOf(prev), 2000) {
		t.Fatal("MarkUsed: not found")
	}
	e2, _ := idx.Lookup(apikey.HashOf(cur))
	e2.Use.Mark(1500)
	got := lastUsed(t, idx, 0)
	if got[idPrev] != 2000 || got[apikey.HashOf(cur).ID()] != 1500 {
		t.Fatalf("after marks: %v", got)
	}

	// Another record reusing the slot does not inherit the use.
	if _, ok := idx.Delete("k"); !ok {
		t.Fatal("delete")
	}
	if e2.Use.Mark(3000) {
		t.Error("a Use kept across a delete must report stale")
	}
	if idx.MarkUsed(apikey.HashOf(cur), 3000) {
		t.Error("MarkUsed found a deleted version")
	}
	other := newKey(t, "production")
	if err := idx.Upsert("o", newRecord("o", standard(), other), t0); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(t, idx, 0); len(got) != 0 {
		t.Fatalf("a new record inherits usage: %v", got)
	}
}

// Marks from many goroutines at once: the latest second wins, none is
// lost, and the race detector sees no race with reloads.
func TestIndexUsageConcurrent(t *testing.T) {
	k := newKey(t, "production")
	idx := New()
	if err := idx.Upsert("k", newRecord("k", standard(), k), t0); err != nil {
		t.Fatal(err)
	}
	h := apikey.HashOf(k)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				sec := int64(1 + g*500 + i)
				e, _ := idx.Lookup(h)
				if !e.Use.Mark(sec) {
					idx.MarkUsed(h, sec)
				}
			}
		}()
	}
	for range 50 {
		if err := idx.Upsert("k", newRecord("k", standard(), k), t0); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if got := lastUsed(t, idx, 0); got[h.ID()] != 4000 {
		t.Fatalf("last used %v, want 4000", got)
	}
}
