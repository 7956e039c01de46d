package index

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/internal/record"
)

// One key hash, one owner: when two records claim one hash, the record
// created first keeps it, whatever order the records arrive in; the later
// claimant keeps its other keys; the conflict is reported and counted.
func TestIndexHashConflict(t *testing.T) {
	shared, own := newKey(t, "production"), newKey(t, "production")
	// The thief's name sorts first, so only the creation times can make
	// the victim win.
	const victim, thief = "zz-victim", "aa-thief"
	victimRec := func() *record.Record { return newRecord("victim", standard(), shared) }
	thiefRec := func() *record.Record {
		r := newRecord("thief", standard(), shared, own)
		r.Owner.Namespace = "hostile"
		return r
	}
	early, late := t0.Add(-time.Hour), t0
	holder := func(idx *Index, key string) string {
		e, ok := idx.Lookup(apikey.HashOf(key))
		if !ok {
			return ""
		}
		return e.Policy.Record()
	}
	for _, victimFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("victimFirst=", victimFirst), func(t *testing.T) {
			idx := New()
			installs := []func() error{
				func() error { return idx.Upsert(victim, victimRec(), early) },
				func() error { return idx.Upsert(thief, thiefRec(), late) },
			}
			if !victimFirst {
				installs[0], installs[1] = installs[1], installs[0]
			}
			if err := installs[0](); err != nil {
				t.Fatal(err)
			}
			err := installs[1]()
			if err == nil {
				t.Fatal("a key in two records must be reported")
			}
			msg := err.Error()
			for _, want := range []string{victim, thief, apikey.HashOf(shared).ID(), "team-a/victim", "hostile/thief"} {
				if !strings.Contains(msg, want) {
					t.Errorf("the conflict report lacks %q", want)
				}
			}
			if strings.Contains(msg, shared) || strings.Contains(msg, apikey.HashOf(shared).String()) {
				t.Error("the conflict report holds the key or its hash")
			}
			if got := holder(idx, shared); got != victim {
				t.Fatalf("shared key held by %q, want the first claimant %q", got, victim)
			}
			if got := holder(idx, own); got != thief {
				t.Fatalf("the later claimant's other key is held by %q", got)
			}
			if got := idx.HashConflicts(); got != 1 {
				t.Fatalf("HashConflicts = %v, want 1", got)
			}

			// Updating the loser, however often, never steals the key.
			for range 3 {
				_ = idx.Upsert(thief, thiefRec(), late)
			}
			if got := holder(idx, shared); got != victim {
				t.Fatalf("after updating the loser the shared key is held by %q", got)
			}
			if got := idx.HashConflicts(); got != 4 {
				t.Fatalf("HashConflicts = %v, want 4", got)
			}
			// Updating the winner keeps it.
			if err := idx.Upsert(victim, victimRec(), early); err != nil {
				t.Fatalf("updating the winner: %v", err)
			}
			if got := holder(idx, shared); got != victim {
				t.Fatalf("after updating the winner the shared key is held by %q", got)
			}
			// Deleting the loser leaves the winner's entry.
			idx.Delete(thief)
			if got := holder(idx, shared); got != victim {
				t.Fatalf("after deleting the loser the shared key is held by %q", got)
			}
			if got := holder(idx, own); got != "" {
				t.Fatal("the deleted loser's own key is still accepted")
			}
		})
	}
}

// Deleting the winner removes the contested hash with it; the loser gets it
// only when it is itself loaded again.
func TestIndexHashConflictWinnerDeleted(t *testing.T) {
	idx := New()
	shared := newKey(t, "production")
	_ = idx.Upsert("b-first", newRecord("first", standard(), shared), t0.Add(-time.Minute))
	_ = idx.Upsert("a-second", newRecord("second", standard(), shared), t0)
	idx.Delete("b-first")
	if _, ok := idx.Lookup(apikey.HashOf(shared)); ok {
		t.Fatal("the winner's contested hash outlived it")
	}
	if err := idx.Upsert("a-second", newRecord("second", standard(), shared), t0); err != nil {
		t.Fatal(err)
	}
	if e, ok := idx.Lookup(apikey.HashOf(shared)); !ok || e.Policy.Record() != "a-second" {
		t.Fatal("the remaining claimant did not get the key on its next update")
	}
}

// Records created at the same instant: the lower name wins, in either order;
// a record without a creation time loses to one that has it.
func TestIndexHashConflictTies(t *testing.T) {
	shared := newKey(t, "production")
	for _, order := range [][]string{{"rec-a", "rec-b"}, {"rec-b", "rec-a"}} {
		idx := New()
		for _, name := range order {
			_ = idx.Upsert(name, newRecord(name, standard(), shared), t0)
		}
		if e, _ := idx.Lookup(apikey.HashOf(shared)); e.Policy.Record() != "rec-a" {
			t.Fatalf("order %v: held by %q, want rec-a", order, e.Policy.Record())
		}
	}
	for _, order := range [][]string{{"rec-a", "rec-b"}, {"rec-b", "rec-a"}} {
		idx := New()
		for _, name := range order {
			created := t0
			if name == "rec-a" {
				created = time.Time{}
			}
			_ = idx.Upsert(name, newRecord(name, standard(), shared), created)
		}
		if e, _ := idx.Lookup(apikey.HashOf(shared)); e.Policy.Record() != "rec-b" {
			t.Fatalf("order %v: held by %q, want rec-b (the one with a creation time)", order, e.Policy.Record())
		}
	}
}

// A deleted record's slot is reused: lookups must still find each key's own
// record, id and expiry, and a stale hash must not reach the new tenant.
func TestIndexSlotReuse(t *testing.T) {
	idx := New()
	ka, kb, kc, kcOld := newKey(t, "production"), newKey(t, "production"), newKey(t, "production"), newKey(t, "production")
	_ = idx.Upsert("a", newRecord("a", standard(), ka), t0)
	_ = idx.Upsert("b", newRecord("b", standard(), kb), t0)
	if _, ok := idx.Delete("a"); !ok {
		t.Fatal("delete a")
	}
	rc := newRecord("c", standard(), kcOld, kc)
	rc.Keys[0].ID = "old-id"
	rc.Keys[0].ExpiresAt = mtime(t0.Add(time.Hour))
	if err := idx.Upsert("c", rc, t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Lookup(apikey.HashOf(ka)); ok {
		t.Fatal("a's key found after a was deleted and its slot reused")
	}
	if e, ok := idx.Lookup(apikey.HashOf(kb)); !ok || e.Policy.Record() != "b" || e.KeyID != apikey.HashOf(kb).ID() || !e.ExpiresAt.IsZero() {
		t.Fatalf("b: %+v", e)
	}
	e, ok := idx.Lookup(apikey.HashOf(kcOld))
	if !ok || e.Policy.Record() != "c" || e.Policy.Owner() != "team-a/c" || e.KeyID != "old-id" || !e.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("c's previous version: %+v", e)
	}
	if e, ok := idx.Lookup(apikey.HashOf(kc)); !ok || e.KeyID != apikey.HashOf(kc).ID() || !e.ExpiresAt.IsZero() {
		t.Fatalf("c's current version: %+v", e)
	}
	if recs, keys := idx.Len(); recs != 2 || keys != 3 {
		t.Fatalf("len %d %d", recs, keys)
	}
}

// The index's tables must stay free of pointers: the garbage collector then
// never scans them, which is what keeps 100,000 keys cheap (see Index).
func TestIndexTablesHoldNoPointers(t *testing.T) {
	var hasPointers func(reflect.Type) bool
	hasPointers = func(ty reflect.Type) bool {
		switch ty.Kind() {
		case reflect.Array:
			return hasPointers(ty.Elem())
		case reflect.Struct:
			for i := range ty.NumField() {
				if hasPointers(ty.Field(i).Type) {
					return true
				}
			}
			return false
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
			reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
			return false
		}
		return true
	}
	x := New()
	if ty := reflect.TypeOf(x.records); hasPointers(ty.Key()) || hasPointers(ty.Elem()) {
		t.Errorf("%v holds pointers", ty)
	}
	// Nor may a key's bucket or a record's slot: 100,000 of them are one
	// object to mark.
	for _, ty := range []reflect.Type{reflect.TypeOf(x.keys.b).Elem(), reflect.TypeOf(x.slots).Elem()} {
		if hasPointers(ty) {
			t.Errorf("%v holds pointers", ty)
		}
	}
}

// Records come and go (rotations, deletions); their texts' space is reclaimed
// by compaction, and a string a request got before it stays intact.
func TestIndexArenaCompaction(t *testing.T) {
	idx := New()
	kept := newKey(t, "production")
	if err := idx.Upsert("kept", newRecord("kept", standard(), kept), t0); err != nil {
		t.Fatal(err)
	}
	before, ok := idx.Lookup(apikey.HashOf(kept))
	if !ok {
		t.Fatal("kept key not found")
	}
	oldID, oldOwner := before.KeyID, before.Policy.Owner()
	var chunksSeen int
	for round := range 40 {
		for i := range 500 {
			name := fmt.Sprintf("churn-%03d-%0200d", i, round) // long names: waste adds up quickly
			var h apikey.Hash
			h[0], h[1], h[2] = byte(i), byte(i>>8), byte(round)
			r := newRecord(name, standard())
			r.Keys = []record.Version{{ID: h.ID(), Hash: h.String()}}
			if err := idx.Upsert(name, r, t0); err != nil {
				t.Fatal(err)
			}
			if round > 0 {
				idx.Delete(fmt.Sprintf("churn-%03d-%0200d", i, round-1))
			}
		}
		chunksSeen = max(chunksSeen, len(idx.text.chunks))
	}
	if recs, _ := idx.Len(); recs != 501 {
		t.Fatalf("%d records, want 501", recs)
	}
	idx.mu.RLock()
	live, waste, chunks := idx.text.live, idx.text.waste, len(idx.text.chunks)
	idx.mu.RUnlock()
	// 40 rounds of 500 records of ~300 bytes wrote ~6 MiB of text; only
	// ~150 KiB is live.
	if waste > max(live, minWaste) || chunks > 6 {
		t.Fatalf("arena not compacted: live %d, waste %d, %d chunks (at most %d seen)", live, waste, chunks, chunksSeen)
	}
	if before.KeyID != oldID || before.Policy.Owner() != oldOwner || oldOwner != "team-a/kept" {
		t.Fatalf("a string from before compaction changed: %q %q", before.KeyID, before.Policy.Owner())
	}
	after, ok := idx.Lookup(apikey.HashOf(kept))
	if !ok || after.KeyID != oldID || after.Policy.Owner() != "team-a/kept" || after.Policy.Record() != "kept" {
		t.Fatalf("kept record after compaction: %+v", after)
	}
	var h apikey.Hash
	h[0], h[1], h[2] = 7, 0, 39
	if e, ok := idx.Lookup(h); !ok || e.Policy.Record() != fmt.Sprintf("churn-%03d-%0200d", 7, 39) || e.KeyID != h.ID() {
		t.Fatalf("latest churn record: %v %+v", ok, e)
	}
}

// Policy classes are counted: restricted keys each have their own, and the
// table gives the slot back when the record goes.
func TestIndexClassTable(t *testing.T) {
	idx := New()
	pol := standard()
	pol.IPAllowlist = []string{"10.0.0.0/8"}
	for i := range 3 {
		if err := idx.Upsert(fmt.Sprint("r", i), newRecord(fmt.Sprint("r", i), pol, newKey(t, "production")), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := idx.Upsert("plain", newRecord("plain", standard(), newKey(t, "production")), t0); err != nil {
		t.Fatal(err)
	}
	if n := len(idx.classes.of); n != 4 {
		t.Fatalf("%d classes in use, want 4", n)
	}
	for i := range 3 {
		idx.Delete(fmt.Sprint("r", i))
	}
	if n, free := len(idx.classes.of), len(idx.classes.free); n != 1 || free != 3 {
		t.Fatalf("%d classes in use and %d free, want 1 and 3", n, free)
	}
	k := newKey(t, "production")
	if err := idx.Upsert("again", newRecord("again", pol, k), t0); err != nil {
		t.Fatal(err)
	}
	if e, ok := idx.Lookup(apikey.HashOf(k)); !ok || !e.Policy.Restricted() || len(idx.classes.c) != 4 {
		t.Fatalf("reused class slot: %v %+v, %d slots", ok, e.Policy.Class(), len(idx.classes.c))
	}
}

// Lookups run while records churn and the arena compacts; every answer is
// whole (run with -race to check the locking as well).
func TestIndexConcurrentChurn(t *testing.T) {
	idx := New()
	k := newKey(t, "production")
	if err := idx.Upsert("stable", newRecord("stable", standard(), k), t0); err != nil {
		t.Fatal(err)
	}
	want := apikey.HashOf(k).ID()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				e, ok := idx.Lookup(apikey.HashOf(k))
				if !ok || e.KeyID != want || e.Policy.Owner() != "team-a/stable" || e.Policy.LimitID() != "uid-stable" {
					t.Errorf("lookup during churn: %v %q %q %q", ok, e.KeyID, e.Policy.Owner(), e.Policy.LimitID())
					return
				}
			}
		})
	}
	for i := range 20_000 {
		name := fmt.Sprintf("churn-%d-%0100d", i%50, i)
		var h apikey.Hash
		h[0], h[1], h[2] = byte(i), byte(i>>8), 0xee
		r := newRecord(name, standard())
		r.Keys = []record.Version{{ID: h.ID(), Hash: h.String()}}
		if err := idx.Upsert(name, r, t0); err != nil {
			t.Fatal(err)
		}
		if i >= 50 {
			idx.Delete(fmt.Sprintf("churn-%d-%0100d", i%50, i-50))
		}
	}
	close(done)
	wg.Wait()
	if recs, _ := idx.Len(); recs != 51 {
		t.Fatalf("%d records, want 51", recs)
	}
}

// Compile reads a record as authz needs it: the owner, the quota's identity
// (the owner's UID), the policy and every version with its expiry.
func TestCompileRecord(t *testing.T) {
	k1, k2 := newKey(t, "production"), newKey(t, "production")
	pol := standard()
	pol.ExpiresAt = mtime(t0.Add(2 * time.Hour))
	pol.IPAllowlist = []string{"192.0.2.0/24"}
	r := newRecord("web", pol, k1, k2)
	r.Keys[0].ID, r.Keys[0].ExpiresAt = "old", mtime(t0.Add(time.Hour))
	c := Compile("rec-web", r, t0)
	if len(c.Problems) > 0 {
		t.Fatal(c.Problems)
	}
	p := c.Policy
	if p.Record() != "rec-web" || p.Owner() != "team-a/web" || p.LimitID() != "uid-web" || !p.Restricted() ||
		p.Limit() != quota.PerHour(1000) || p.Environment() != "production" || p.ExpiresAt() != t0.Add(2*time.Hour).UnixNano() ||
		!c.Created.Equal(t0) {
		t.Fatalf("policy %+v", p)
	}
	if len(c.Keys) != 2 || c.Keys[0].KeyID != "old" || !c.Keys[0].ExpiresAt.Equal(t0.Add(time.Hour)) ||
		c.Keys[1].Hash != apikey.HashOf(k2) || !c.Keys[1].ExpiresAt.Equal(t0.Add(2*time.Hour)) {
		// The current version stops with the whole key.
		t.Fatalf("keys %+v", c.Keys)
	}
	// Without an owner UID the record still has a quota of its own.
	r.Owner.UID = ""
	if id := Compile("rec-web", r, t0).Policy.LimitID(); id != "record/rec-web" {
		t.Fatalf("LimitID %q", id)
	}
}

// Upsert, Lookup, Delete: what a lookup finds follows the record.
func TestIndexUpsertLookupDelete(t *testing.T) {
	idx := New()
	a, b := newKey(t, "production"), newKey(t, "production")
	r := newRecord("web", standard(), a)
	if err := idx.Upsert("rec", r, t0); err != nil {
		t.Fatal(err)
	}
	if e, ok := idx.Lookup(apikey.HashOf(a)); !ok || e.KeyID != apikey.HashOf(a).ID() || e.Policy.Owner() != "team-a/web" {
		t.Fatalf("lookup after upsert: %v %+v", ok, e)
	}
	r.Keys = []record.Version{record.NewVersion(b, t0)}
	if err := idx.Upsert("rec", r, t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Lookup(apikey.HashOf(a)); ok {
		t.Fatal("a version dropped from the record is still found")
	}
	if names := idx.Names(); len(names) != 1 || names[0] != "rec" {
		t.Fatalf("Names = %v", names)
	}
	if id, ok := idx.Delete("rec"); !ok || id != "uid-web" {
		t.Fatalf("Delete = %q, %v", id, ok)
	}
	if _, ok := idx.Lookup(apikey.HashOf(b)); ok {
		t.Fatal("a deleted record's key is still found")
	}
	if recs, keys := idx.Len(); recs != 0 || keys != 0 || len(idx.Names()) != 0 {
		t.Fatalf("Len after delete = %d, %d", recs, keys)
	}
}

// A version the controller marked revoked is not in the index at all: its
// callers get invalid_api_key, as for an unknown key, while the record's
// other versions keep working.
func TestIndexRevokedVersion(t *testing.T) {
	leaked, cur := newKey(t, "production"), newKey(t, "production")
	r := newRecord("owner", standard(), leaked, cur)
	r.Keys[0].ExpiresAt = mtime(t0)
	r.Keys[0].Revoked = &record.Revocation{At: *mtime(t0), Source: "cli"}
	idx := New()
	if err := idx.Upsert("rec", r, t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := idx.Lookup(apikey.HashOf(leaked)); ok {
		t.Fatal("a revoked version is still in the index")
	}
	if _, ok := idx.Lookup(apikey.HashOf(cur)); !ok {
		t.Fatal("the current version was dropped with the revoked one")
	}
}
