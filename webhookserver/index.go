package webhookserver

import (
	"crypto/sha256"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// Index finds the entry for a key hash. It is all the HTTP handler knows of
// where keys come from: implementations must be safe for concurrent use, must
// not block on I/O and should not allocate. Entries come from Compile;
// MemoryIndex is the implementation the auth server uses.
type Index interface {
	Lookup(h apikey.Hash) (Entry, bool)
}

// MemoryIndex is the Index the auth server builds from key records. Lookups
// take a read lock on one map; Upsert and Delete compile outside the lock
// and then swap a record's entries under the write lock, so a reader sees
// either all of a record's old entries or all of its new ones.
//
// The key table holds no pointers (a key version is its hash, the slot of
// its record and plain numbers), so the garbage collector never scans it;
// what it does scan is one Policy and one string per record. With 100,000
// keys that is what keeps collections, and the latency they add, small.
type MemoryIndex struct {
	mu   sync.RWMutex
	keys map[apikey.Hash]keySlot
	// slots holds each record's policy; nil on a free slot. A policy
	// carries its versions' hashes, so they can be removed.
	slots []*Policy
	free  []uint32
	// records maps a record's name, by its digest, to its slot: a map
	// without pointers, like keys.
	records map[nameKey]uint32
}

// keySlot is one key version in the table.
type keySlot struct {
	rec uint32
	// The key id is policy text [idOff, idOff+idLen).
	idOff uint32
	idLen uint32
	// expires is the version's expiry in Unix nanoseconds; 0 means none.
	expires int64
}

// NewMemoryIndex returns an empty index.
func NewMemoryIndex() *MemoryIndex {
	return &MemoryIndex{keys: map[apikey.Hash]keySlot{}, records: map[nameKey]uint32{}}
}

// Lookup implements Index.
func (x *MemoryIndex) Lookup(h apikey.Hash) (Entry, bool) {
	x.mu.RLock()
	k, ok := x.keys[h]
	if !ok {
		x.mu.RUnlock()
		return Entry{}, false
	}
	p := x.slots[k.rec]
	x.mu.RUnlock()
	e := Entry{Policy: p, KeyID: p.text[k.idOff : k.idOff+k.idLen]}
	if k.expires != 0 {
		e.ExpiresAt = time.Unix(0, k.expires)
	}
	return e, true
}

// Upsert replaces every entry of the record named name with those of r. The
// record is applied even when the returned error is not nil: the error lists
// the parts that could not be used, which fail closed (see
// CompiledRecord.Problems). It never contains key material.
func (x *MemoryIndex) Upsert(name string, r *record.Record) error {
	return x.Install(Compile(name, r))
}

// Install is Upsert for a record already compiled.
func (x *MemoryIndex) Install(c *CompiledRecord) error {
	p := c.Policy
	name := p.Record()
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(name)
	var rec uint32
	if n := len(x.free); n > 0 {
		rec = x.free[n-1]
		x.free = x.free[:n-1]
	} else {
		rec = uint32(len(x.slots))
		x.slots = append(x.slots, nil)
	}
	x.slots[rec] = p
	x.records[keyOfName(name)] = rec
	for _, k := range c.Keys {
		if other, ok := x.keys[k.Hash]; ok {
			// Two records claiming one key: only a copied record does
			// that. The newer one wins; say so.
			c.Problems = append(c.Problems, errors.New("key record "+name+": key "+k.KeyID+
				" is also in key record "+x.slots[other.rec].Record()+"; using this record"))
		}
		x.keys[k.Hash] = keySlot{rec: rec, idOff: k.idOff, idLen: uint32(len(k.KeyID)), expires: unixNano(k.ExpiresAt)}
	}
	return errors.Join(c.Problems...)
}

// unixNano returns t in Unix nanoseconds, 0 for the zero time; times beyond
// what int64 nanoseconds hold are clamped (the API server's range is wider).
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Unix() >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	case t.Unix() <= math.MinInt64/int64(time.Second):
		return math.MinInt64 + 1
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

// Delete removes every entry of the record named name. It returns the
// record's rate-limit identity so the caller can drop its counter.
func (x *MemoryIndex) Delete(name string) (limitID string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	rec, ok := x.records[keyOfName(name)]
	if !ok {
		return "", false
	}
	limitID = x.slots[rec].LimitID()
	x.removeLocked(name)
	return limitID, true
}

func (x *MemoryIndex) removeLocked(name string) {
	rec, ok := x.records[keyOfName(name)]
	if !ok {
		return
	}
	p := x.slots[rec]
	for i := range int(p.nKeys) {
		// Only our own entry: another record may have claimed the hash since.
		h := p.hash(i)
		if k, ok := x.keys[h]; ok && k.rec == rec {
			delete(x.keys, h)
		}
	}
	x.slots[rec] = nil
	x.free = append(x.free, rec)
	delete(x.records, keyOfName(name))
}

// Len returns how many records and key versions (tombstones included) the
// index holds.
func (x *MemoryIndex) Len() (records, keys int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.records), len(x.keys)
}

// names returns the names of the records in the index.
func (x *MemoryIndex) names() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]string, 0, len(x.records))
	for _, p := range x.slots {
		if p != nil {
			out = append(out, p.Record())
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
