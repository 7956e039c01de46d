package index

import (
	"encoding/binary"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Usage: the last accepted use of each key version, for the manager's
// status.currentKey.lastUsedAt and status.previousKeys[].lastUsedAt.
//
// Each record slot owns usageStride words of a usage table, one per
// version: version i of the record in slot rec is word rec*usageStride+i.
// A bucket names its version by i (in the bits of its class above
// classBits), so a lookup finds its usage word without reading anything but
// its bucket, and returns it in Entry.Use; the decision marks it when it
// accepts the request (authz.Use.Mark). A word changes once a second per
// version at most, so cores that accept the same key concurrently share a
// cache line that is almost always read, and there is no lock: the index's
// read lock is not taken again.
//
// A MeterrAPIKey has at most 4 versions (the current key and 3 previous
// keys); a hand-written record's versions after the 4th are not tracked.
//
// The table is made of chunks that never move, so a word a lookup returned
// stays valid after the lock is released. A word carries the tag of its
// version's hash (see authz.Use): a mark kept across a change of the word's
// version (a rotation moves the version to another place, its record goes)
// finds another tag and is redone by hash (MarkUsed). Two versions share a
// tag with a probability of 2^-24, and a mark could go to the wrong one
// only if, in the microseconds between its lookup and its decision, the
// word passed to a version with the same tag.
const (
	usageStride = 4
	usageChunk  = 4096 // words: 1,024 records, 32 KiB
	classBits   = 23   // a class index is below 1<<23; the version above
	classMask   = 1<<classBits - 1
	versionMask = 0xff
)

// tagOf is the usage tag of the version whose hash is h: 24 bits of the
// hash (not those the key table's home is taken from), never 0.
func tagOf(h *apikey.Hash) uint64 {
	return (uint64(binary.LittleEndian.Uint32(h[8:12])) & authz.UseTagMask) | 1
}

type usageTable struct {
	chunks []*[usageChunk]atomic.Uint64
}

// word returns the word of version i of the record in slot rec, growing
// the table when needed (callers hold the write lock to grow it).
func (u *usageTable) word(rec uint32, i int) *atomic.Uint64 {
	w := int(rec)*usageStride + i
	for w/usageChunk >= len(u.chunks) {
		u.chunks = append(u.chunks, new([usageChunk]atomic.Uint64))
	}
	return &u.chunks[w/usageChunk][w%usageChunk]
}

// at is word without growing: for readers (who hold the read lock).
func (u *usageTable) at(rec uint32, i int) *atomic.Uint64 {
	w := int(rec)*usageStride + i
	return &u.chunks[w/usageChunk][w%usageChunk]
}

// reset gives the words of slot rec the tags in tags and the seconds in
// secs (nil: no version, never used), returning the seconds the words
// held. A mark made before the swap is in the returned value; one made
// after it by a version that moved finds another tag and is redone by hash
// (MarkUsed), which waits for the write lock the caller holds.
func (u *usageTable) reset(rec uint32, tags, secs *[usageStride]uint64) (old [usageStride]uint64) {
	for i := range usageStride {
		w := u.word(rec, i)
		var v uint64
		if tags != nil && tags[i] != 0 {
			v = tags[i] << authz.UseTagShift
			if secs != nil {
				v |= secs[i]
			}
		}
		old[i] = w.Swap(v) & authz.UseSecondsMask
	}
	return old
}

// use returns the Use of the version in bucket b; the caller holds the read
// lock.
func (x *Index) use(b *bucket) authz.Use {
	i := int(b.class>>classBits) & versionMask
	if i >= usageStride {
		return authz.Use{}
	}
	return authz.NewUse(x.usage.at(b.rec-1, i), tagOf(&b.hash))
}

// MarkUsed records an accepted use at sec (Unix seconds) of the version
// whose hash is h, under the read lock: the slow path of an authz.Use whose
// word changed hands between the lookup and the decision (a record
// reloaded meanwhile). It reports whether the version is in the index.
func (x *Index) MarkUsed(h apikey.Hash, sec int64) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	b := x.keys.find(&h)
	if b == nil {
		return false
	}
	x.use(b).Mark(sec)
	return true
}

// VersionUse is the last accepted use of one key version.
type VersionUse struct {
	// Owner is the MeterrAPIKey's "namespace/name", OwnerUID its UID.
	Owner    string
	OwnerUID string
	KeyID    string
	LastUsed time.Time
}

// Usage returns the versions last used at since or later (Unix seconds; 0:
// every version ever used since the index started). Its strings are
// copies.
func (x *Index) Usage(since int64) []VersionUse {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []VersionUse
	for rec := range x.slots {
		if x.slots[rec].text.chunk == 0 {
			continue
		}
		p := x.policyAt(uint32(rec))
		for i := range min(p.NKeys(), usageStride) {
			s := int64(x.usage.at(uint32(rec), i).Load() & authz.UseSecondsMask)
			if s == 0 || s < since {
				continue
			}
			// Only a version the slot still holds: a contested hash
			// another record claimed first is not this record's.
			h := p.KeyHash(i)
			if b := x.keys.find(&h); b == nil || b.rec != uint32(rec)+1 {
				continue
			}
			out = append(out, VersionUse{Owner: strings.Clone(p.Owner()), OwnerUID: strings.Clone(p.LimitID()),
				KeyID: strings.Clone(p.KeyID(i)), LastUsed: time.Unix(s, 0).UTC()})
		}
	}
	return out
}
