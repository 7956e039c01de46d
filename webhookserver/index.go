package webhookserver

import (
	"errors"
	"sync"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// Index finds the entry for a key hash. It is all the HTTP handler knows of
// where keys come from: implementations must be safe for concurrent use, must
// not block on I/O and should not allocate. Entries come from Compile;
// MemoryIndex is the implementation the auth server uses.
type Index interface {
	Lookup(h apikey.Hash) (*Entry, bool)
}

// MemoryIndex is the Index the auth server builds from key records. Lookups
// take a read lock on one map; Upsert and Delete compile outside the lock
// and then swap a record's entries under the write lock, so a reader sees
// either all of a record's old entries or all of its new ones.
type MemoryIndex struct {
	mu      sync.RWMutex
	keys    map[apikey.Hash]*Entry
	records map[string]*CompiledRecord
}

// NewMemoryIndex returns an empty index.
func NewMemoryIndex() *MemoryIndex {
	return &MemoryIndex{keys: map[apikey.Hash]*Entry{}, records: map[string]*CompiledRecord{}}
}

// Lookup implements Index.
func (x *MemoryIndex) Lookup(h apikey.Hash) (*Entry, bool) {
	x.mu.RLock()
	e, ok := x.keys[h]
	x.mu.RUnlock()
	return e, ok
}

// Upsert replaces every entry of the record named name with those of r. The
// record is applied even when the returned error is not nil: the error lists
// the parts that could not be used, which fail closed (see
// CompiledRecord.Problems). It never contains key material.
func (x *MemoryIndex) Upsert(name string, r *record.Record) error {
	c := Compile(name, r)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(name)
	for _, k := range c.Keys {
		if other, ok := x.keys[k.Hash]; ok {
			// Two records claiming one key: only a copied record does
			// that. The newer one wins; say so.
			c.Problems = append(c.Problems, errors.New("key record "+name+": key "+k.Entry.KeyID+
				" is also in key record "+other.Policy.record+"; using this record"))
		}
		x.keys[k.Hash] = k.Entry
	}
	x.records[name] = c
	return errors.Join(c.Problems...)
}

// Delete removes every entry of the record named name. It returns the
// record's rate-limit identity so the caller can drop its counter.
func (x *MemoryIndex) Delete(name string) (limitID string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c, ok := x.records[name]
	if !ok {
		return "", false
	}
	x.removeLocked(name)
	return c.Policy.limitID, true
}

func (x *MemoryIndex) removeLocked(name string) {
	old, ok := x.records[name]
	if !ok {
		return
	}
	for _, k := range old.Keys {
		// Only our own entry: another record may have claimed the hash since.
		if x.keys[k.Hash] == k.Entry {
			delete(x.keys, k.Hash)
		}
	}
	delete(x.records, name)
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
	for n := range x.records {
		out = append(out, n)
	}
	return out
}
