package index

import (
	"crypto/sha256"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Index is the auth server's in-memory index from each key version's hash to
// the compiled policy of its key record. Lookups take a read lock; Upsert
// and Delete compile outside the lock and then swap a record's entries
// under the write lock, so a reader sees either all of a record's old
// entries or all of its new ones.
//
// Nothing the index holds per record has a pointer: a key version is a
// bucket of the key table (its hash, plain numbers, and its record's class
// by index and text by place); a record's slot is plain numbers; the texts
// (hashes, name, owner, quota identity, key ids) are in shared arena chunks.
// The garbage collector therefore marks a few large objects, not 100,000
// small ones, and a collection under load stays as short with 100,000 keys
// as with 100. And a lookup reads one bucket, one cache line (see keyTable),
// and the decision after it the start of the record's text.
type Index struct {
	mu   sync.RWMutex
	keys keyTable
	// slots holds each record; chunk 0 marks a free slot.
	slots []recSlot
	free  []uint32
	// records maps a record's name, by its digest, to its slot: a map
	// without pointers, like keys.
	records map[nameKey]uint32
	classes classTable
	text    textArena
	// conflicts counts the key hashes found claimed by two records.
	conflicts atomic.Uint64
	// usage holds each version's last accepted use (usage.go).
	usage usageTable
}

// recSlot is a record: its Policy without pointers (see policyAt) and when
// it was created.
type recSlot struct {
	// created is the record Secret's creationTimestamp in Unix
	// nanoseconds (see claimOrder).
	created int64
	text    textRef
	class   uint32
}

// New returns an empty index.
func New() *Index {
	return &Index{keys: newKeyTable(), records: map[nameKey]uint32{},
		classes: classTable{of: map[*authz.Class]uint32{}}}
}

// Lookup returns the entry of the key version whose hash is h. It takes a
// read lock, reads one bucket of the key table, allocates only the key id
// (12 bytes), and its strings stay valid after it returns (see textArena).
func (x *Index) Lookup(h apikey.Hash) (authz.Entry, bool) {
	x.mu.RLock()
	b := x.keys.find(&h)
	if b == nil {
		x.mu.RUnlock()
		return authz.Entry{}, false
	}
	c, text := x.classes.c[b.class&classMask], x.text.string(b.text.ref())
	key, expires, custom := b.quota, b.expires, b.class&customID != 0
	use := x.use(b)
	x.mu.RUnlock()
	e := authz.Entry{Policy: authz.NewPolicy(c, text, key), Use: use}
	// The id is the hash's, but for records written by hand: taking it
	// from the hash, a 12-byte string, spares reading the text.
	if custom {
		e.KeyID = e.Policy.KeyIDOf(h)
	} else {
		e.KeyID = h.ID()
	}
	if expires != 0 {
		e.ExpiresAt = time.Unix(0, expires)
	}
	return e, true
}

// policyAt rebuilds the Policy of the record in slot rec for the index's own
// bookkeeping (its name, owner, quota identity and hashes), without the
// quota key, which only a decision reads and the buckets hold. Its strings
// point into the arena, whose bytes are never written again once a string
// has been cut from them, so they stay valid after the lock is released.
func (x *Index) policyAt(rec uint32) authz.Policy {
	s := &x.slots[rec]
	return authz.NewPolicy(x.classes.c[s.class], x.text.string(s.text), 0)
}

// Upsert replaces every entry of the record named name with those of r;
// created is the record Secret's creationTimestamp (see Install). The
// record is applied even when the returned error is not nil: the error lists
// the parts that could not be used, which fail closed (see
// authz.CompiledRecord.Problems). It never contains key material.
func (x *Index) Upsert(name string, r *record.Record, created time.Time) error {
	return x.Install(Compile(name, r, created))
}

// Compile compiles the key record r, the Secret named name created at
// created, for Install.
func Compile(name string, r *record.Record, created time.Time) *authz.CompiledRecord {
	s := &authz.RecordSpec{
		Name:        name,
		Owner:       r.Owner.String(),
		LimitID:     string(r.Owner.UID),
		Environment: r.Policy.Environment,
		Permissions: r.Policy.Permissions,
		Limit:       quota.PerHour(r.Policy.RequestsPerHour),
		IPAllowlist: r.Policy.IPAllowlist,
		Domains:     r.Policy.Domains,
		Disabled:    r.Policy.Disabled,
		Versions:    make([]authz.VersionSpec, 0, len(r.Keys)),
		Created:     created,
	}
	if t := r.Policy.ExpiresAt; t != nil {
		s.ExpiresAt = t.Time
	}
	for _, v := range r.Keys {
		if v.Revoked != nil {
			// Reported compromised: refused as an unknown key
			// (invalid_api_key), never as a tombstone.
			continue
		}
		vs := authz.VersionSpec{ID: v.ID, Hash: v.Hash}
		if t := v.ExpiresAt; t != nil {
			vs.ExpiresAt = t.Time
		}
		s.Versions = append(s.Versions, vs)
	}
	return authz.Compile(s)
}

// Install is Upsert for a record already compiled.
//
// One key hash, one owner: when another record already holds one of c's
// hashes, the record whose Secret was created first (c.Created; ties go to
// the lower name) keeps it, whichever of the two arrives first, and the
// other is installed without that hash. Each such conflict is counted
// (HashConflicts) and reported in the returned error with both records and
// owners and the key id.
func (x *Index) Install(c *authz.CompiledRecord) error {
	p := c.Policy
	name := p.Record()
	class, text, key := p.Parts()
	x.mu.Lock()
	defer x.mu.Unlock()
	// The versions' last uses carry over a reload of the record, by hash.
	var used map[apikey.Hash]uint64
	if old, ok := x.records[keyOfName(name)]; ok {
		secs := x.usage.reset(old, nil, nil)
		op := x.policyAt(old)
		for i := range min(op.NKeys(), usageStride) {
			if secs[i] != 0 {
				if used == nil {
					used = map[apikey.Hash]uint64{}
				}
				used[op.KeyHash(i)] = secs[i]
			}
		}
	}
	x.removeLocked(name)
	var rec uint32
	if n := len(x.free); n > 0 {
		rec = x.free[n-1]
		x.free = x.free[:n-1]
	} else {
		rec = uint32(len(x.slots))
		x.slots = append(x.slots, recSlot{})
	}
	x.slots[rec] = recSlot{
		created: claimOrder(c.Created),
		text:    x.text.put(text),
		class:   x.classes.ref(class),
	}
	slot := x.slots[rec]
	x.records[keyOfName(name)] = rec
	if slot.class > classMask {
		// A bucket keeps its version's place above the class index
		// (usage.go): 8 million classes, one per restricted record at
		// most, are more than a namespace's Secrets can hold. Fail closed.
		x.removeLocked(name)
		return errors.New("key record " + name + ": more than 8,388,607 policy classes in the index; the record is refused")
	}
	created := x.slots[rec].created
	var tags, secs [usageStride]uint64
	for i := range min(len(c.Keys), usageStride) {
		tags[i], secs[i] = tagOf(&c.Keys[i].Hash), used[c.Keys[i].Hash]
	}
	x.usage.reset(rec, &tags, &secs)
	for i, k := range c.Keys {
		if other := x.keys.find(&k.Hash); other != nil {
			// Two records claiming one key: one key, one owner. The
			// first claimant keeps it: the record whose Secret was
			// created first (a time the API server sets, in a namespace
			// only the manager writes), then the lower name, so the
			// answer does not depend on the order records arrive in
			// (watch events, a relist). The other record keeps its
			// other keys. When the winner goes, the contested hash goes
			// with it: the loser gets it back only when it is itself
			// loaded again (its next update or a relist), never by
			// inheritance at the moment the winner is removed.
			x.conflicts.Add(1)
			o := x.policyAt(other.rec - 1)
			if !claimsFirst(created, name, x.slots[other.rec-1].created, o.Record()) {
				c.Problems = append(c.Problems, errors.New("key record "+name+" (owner "+p.Owner()+"): key "+k.KeyID+
					" is also in key record "+o.Record()+" (owner "+o.Owner()+"), which claimed it first; ignored here"))
				continue
			}
			c.Problems = append(c.Problems, errors.New("key record "+name+" (owner "+p.Owner()+"): key "+k.KeyID+
				" is also in key record "+o.Record()+" (owner "+o.Owner()+"); this record claimed it first and keeps it"))
		}
		b := bucket{hash: k.Hash, expires: authz.UnixNano(k.ExpiresAt), quota: key, rec: rec + 1, class: slot.class,
			text: pack(slot.text)}
		if k.KeyID != k.Hash.ID() {
			b.class |= customID
		}
		b.class |= uint32(min(i, versionMask)) << classBits
		x.keys.put(b)
	}
	if x.text.wasteful() {
		x.compactLocked()
	}
	return errors.Join(c.Problems...)
}

// Delete removes every entry of the record named name. It returns the
// record's rate-limit identity so the caller can drop its counter.
func (x *Index) Delete(name string) (limitID string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	rec, ok := x.records[keyOfName(name)]
	if !ok {
		return "", false
	}
	p := x.policyAt(rec)
	// A copy: the caller keeps it beyond the lock (the limiter may keep
	// it longer), and it must not keep an arena chunk alive.
	limitID = strings.Clone(p.LimitID())
	x.removeLocked(name)
	return limitID, true
}

func (x *Index) removeLocked(name string) {
	rec, ok := x.records[keyOfName(name)]
	if !ok {
		return
	}
	p := x.policyAt(rec)
	for i := range p.NKeys() {
		// Only our own entry: another record may have claimed the hash since.
		h := p.KeyHash(i)
		if b := x.keys.find(&h); b != nil && b.rec == rec+1 {
			x.keys.remove(&h)
		}
	}
	x.usage.reset(rec, nil, nil)
	x.text.release(x.slots[rec].text)
	x.classes.unref(x.slots[rec].class)
	x.slots[rec] = recSlot{}
	x.free = append(x.free, rec)
	delete(x.records, keyOfName(name))
}

// compactLocked copies every live record's text into fresh chunks, leaving
// the old chunks to the garbage collector once no request holds a string
// from them.
func (x *Index) compactLocked() {
	old := x.text
	x.text = textArena{}
	for i := range x.slots {
		if s := &x.slots[i]; s.text.chunk != 0 {
			s.text = x.text.put(old.string(s.text))
		}
	}
	x.keys.each(func(b *bucket) { b.text = pack(x.slots[b.rec-1].text) })
}

// Len returns how many records and key versions (tombstones included) the
// index holds.
func (x *Index) Len() (records, keys int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.records), x.keys.n
}

// HashConflicts returns how many times a record was loaded with a key hash
// that another record held (see Install).
func (x *Index) HashConflicts() uint64 { return x.conflicts.Load() }

// Names returns the names of the records in the index.
func (x *Index) Names() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]string, 0, len(x.records))
	for i, s := range x.slots {
		if s.text.chunk != 0 {
			p := x.policyAt(uint32(i))
			out = append(out, strings.Clone(p.Record()))
		}
	}
	return out
}

// nameKey is a record name's digest: the first 128 bits of its SHA-256.
// Record names are chosen by the operator, not by clients, and two of
// 100,000 names share a digest with a probability of about 2^-94.
type nameKey [16]byte

func keyOfName(name string) nameKey {
	d := sha256.Sum256([]byte(name))
	return nameKey(d[:16])
}

// textArena holds the records' texts in chunks. Bytes once written are never
// written again: a removed text is only counted as waste, and compaction
// copies the live texts into new chunks. That is what lets a request keep a
// string cut from a chunk after the index's lock is released.
type textArena struct {
	chunks [][]byte
	live   int
	waste  int
}

// textRef locates a text: chunk is the chunk's index plus one (0: none).
type textRef struct {
	chunk uint32
	off   uint32
	n     uint32
}

const (
	arenaChunk = 256 << 10
	// minWaste is how much removed text the arena keeps before it
	// compacts (and then only once waste exceeds the live text).
	minWaste = 1 << 20
)

func (a *textArena) put(s string) textRef {
	if len(s) == 0 {
		return textRef{}
	}
	a.live += len(s)
	if len(s) > arenaChunk/4 {
		a.chunks = append(a.chunks, []byte(s))
		return textRef{chunk: uint32(len(a.chunks)), n: uint32(len(s))}
	}
	// Append to the last chunk with room: a large text has a chunk of its
	// own, so look at the last two.
	for i := len(a.chunks) - 1; i >= 0 && i >= len(a.chunks)-2; i-- {
		if c := a.chunks[i]; cap(c) == arenaChunk && len(c)+len(s) <= cap(c) {
			a.chunks[i] = append(c, s...)
			return textRef{chunk: uint32(i + 1), off: uint32(len(c)), n: uint32(len(s))}
		}
	}
	c := append(make([]byte, 0, arenaChunk), s...)
	a.chunks = append(a.chunks, c)
	return textRef{chunk: uint32(len(a.chunks)), n: uint32(len(s))}
}

func (a *textArena) string(r textRef) string {
	if r.chunk == 0 {
		return ""
	}
	return unsafe.String(&a.chunks[r.chunk-1][r.off], r.n) //nolint:gosec // bytes below a chunk's length are never written again
}

func (a *textArena) release(r textRef) {
	a.live -= int(r.n)
	a.waste += int(r.n)
}

func (a *textArena) wasteful() bool { return a.waste > minWaste && a.waste > a.live }

// classTable numbers the policy classes in use, so a record refers to its
// class by index. Interned classes are shared by many records; a restricted
// key's class is its own.
type classTable struct {
	c    []*authz.Class
	refs []uint32
	free []uint32
	of   map[*authz.Class]uint32
}

func (t *classTable) ref(c *authz.Class) uint32 {
	if i, ok := t.of[c]; ok {
		t.refs[i]++
		return i
	}
	var i uint32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
		t.c[i], t.refs[i] = c, 1
	} else {
		i = uint32(len(t.c))
		t.c = append(t.c, c)
		t.refs = append(t.refs, 1)
	}
	t.of[c] = i
	return i
}

func (t *classTable) unref(i uint32) {
	if t.refs[i]--; t.refs[i] == 0 {
		delete(t.of, t.c[i])
		t.c[i] = nil
		t.free = append(t.free, i)
	}
}

// claimsFirst reports whether a record created at created and named name
// claimed a key hash before the record created at otherCreated and named
// otherName: earlier creation first, then the lower name.
func claimsFirst(created int64, name string, otherCreated int64, otherName string) bool {
	if created != otherCreated {
		return created < otherCreated
	}
	return name < otherName
}

// ClaimedBefore reports whether a record created at a and named aName
// claims a key hash before one created at b and named bName: the order by
// which the index gives a hash two records claim to one of them (the first
// created, then the lower name), for tools that must agree with it.
func ClaimedBefore(a time.Time, aName string, b time.Time, bName string) bool {
	return claimsFirst(claimOrder(a), aName, claimOrder(b), bName)
}

// claimOrder is a record's creation time as the index compares it: Unix
// nanoseconds, and a record without one (the API server always sets it)
// after every record that has one.
func claimOrder(created time.Time) int64 {
	if created.IsZero() {
		return math.MaxInt64
	}
	return authz.UnixNano(created)
}
