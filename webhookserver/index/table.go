package index

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// bucket is one key version in the key table: everything a decision needs
// of the index, in one 64-byte cache line (see keyTable). It holds no
// pointers.
type bucket struct {
	hash apikey.Hash
	// expires is when the version stops being accepted, in Unix
	// nanoseconds (authz.CompiledKey.ExpiresAt); 0 means never.
	expires int64
	// quota is the record's quota key (authz.Policy.QuotaKey).
	quota uint64
	// rec is the record's slot plus one; 0 marks an empty bucket.
	rec uint32
	// class is the record's class (see recSlot), with customID set when
	// the version's id is not its hash's (apikey.Hash.ID) and so must be
	// read from the text.
	class uint32
	// text is the record slot's, packed.
	text packedText
}

const customID = 1 << 31

// packedText is a textRef in 8 bytes: a text is at most 64 KiB
// (authz.Compile), and 65,535 chunks of 256 KiB (16 GiB of text, some
// 50 million records) are more than any auth server's memory holds.
type packedText struct {
	off   uint32
	chunk uint16
	n     uint16
}

func pack(r textRef) packedText {
	return packedText{off: r.off, chunk: uint16(r.chunk), n: uint16(r.n)}
}

func (p packedText) ref() textRef {
	return textRef{chunk: uint32(p.chunk), off: p.off, n: uint32(p.n)}
}

// keyTable maps key hashes to buckets by open addressing with Robin Hood
// probing, in one pointer-free slice of 64-byte buckets.
//
// Why not a Go map: with 100,000 keys the table is far larger than the CPU's
// caches, so what a lookup costs is the cache lines it reads, not the
// instructions. A map[apikey.Hash]V reads a group's control word, then the
// slot (two lines), then whatever the value points to; here a hit is one
// line, usually the home bucket itself, and it holds all a decision needs
// of the index. The auth server's 100,000-key latency came within 10% of
// its 100-key latency only once a decision read that line and nothing else
// of the index (see docs/benchmarks.md).
//
// Robin Hood probing keeps the probe sequences short and even at a high
// load, and ends a search for an unknown key (what an attacker sends) as soon
// as it passes a bucket nearer its home than the search is. Where a hash
// starts is its first 64 bits mixed with a random seed, so a client cannot
// pick keys whose searches all land in one cluster.
type keyTable struct {
	b    []bucket
	n    int
	seed uint64
}

// Size: at most 4/5 of the buckets used; a table that reaches that is
// rebuilt with 3/2 as many buckets as it holds keys. The load stays between
// 2/3 and 4/5, where a hit is one or two buckets from home and 100,000 keys
// take about 9 MiB.
const (
	maxLoadNum, maxLoadDen = 4, 5
	minBuckets             = 16
)

func newKeyTable() keyTable {
	var s [8]byte
	_, _ = rand.Read(s[:]) // never fails (crypto/rand panics rather)
	return keyTable{seed: binary.LittleEndian.Uint64(s[:])}
}

// home returns the bucket where h's probe sequence starts.
func (t *keyTable) home(h *apikey.Hash) int {
	x := binary.LittleEndian.Uint64(h[:8]) ^ t.seed
	// A bijective mix (MurmurHash3's finalizer), then a multiply-shift onto
	// the table's length, which need not be a power of two.
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	hi, _ := bits.Mul64(x, uint64(len(t.b)))
	return int(hi)
}

// dist is how far bucket i is from the home of the hash it holds.
func (t *keyTable) dist(i int, b *bucket) int {
	d := i - t.home(&b.hash)
	if d < 0 {
		d += len(t.b)
	}
	return d
}

// find returns the bucket of h, or nil. The bucket is valid until the table
// is next written.
func (t *keyTable) find(h *apikey.Hash) *bucket {
	if i := t.index(h); i >= 0 {
		return &t.b[i]
	}
	return nil
}

// index returns where h's bucket is, or -1.
func (t *keyTable) index(h *apikey.Hash) int {
	if len(t.b) == 0 {
		return -1
	}
	i := t.home(h)
	for d := 0; ; d++ {
		b := &t.b[i]
		if b.rec == 0 {
			return -1
		}
		if b.hash == *h {
			return i
		}
		if t.dist(i, b) < d {
			return -1 // h would have displaced b
		}
		if i++; i == len(t.b) {
			i = 0
		}
	}
}

// put inserts nb, or replaces the bucket that holds its hash.
func (t *keyTable) put(nb bucket) {
	if b := t.find(&nb.hash); b != nil {
		*b = nb
		return
	}
	if (t.n+1)*maxLoadDen > len(t.b)*maxLoadNum {
		t.resize(max(minBuckets, (t.n+1)*3/2))
	}
	t.insert(nb)
	t.n++
}

// insert places nb, whose hash is not in the table, displacing buckets
// nearer their home than nb is to its own.
func (t *keyTable) insert(nb bucket) {
	i := t.home(&nb.hash)
	for d := 0; ; d++ {
		b := &t.b[i]
		if b.rec == 0 {
			*b = nb
			return
		}
		if bd := t.dist(i, b); bd < d {
			nb, *b = *b, nb
			d = bd
		}
		if i++; i == len(t.b) {
			i = 0
		}
	}
}

// remove deletes h's bucket, shifting the buckets after it back so that no
// tombstone is left; it reports whether h was there.
func (t *keyTable) remove(h *apikey.Hash) bool {
	i := t.index(h)
	if i < 0 {
		return false
	}
	for {
		j := i + 1
		if j == len(t.b) {
			j = 0
		}
		if t.b[j].rec == 0 || t.dist(j, &t.b[j]) == 0 {
			break
		}
		t.b[i] = t.b[j]
		i = j
	}
	t.b[i] = bucket{}
	t.n--
	return true
}

func (t *keyTable) resize(n int) {
	old := t.b
	t.b = make([]bucket, n)
	adviseHugePages(t.b)
	for i := range old {
		if old[i].rec != 0 {
			t.insert(old[i])
		}
	}
	unadviseHugePages(old)
}

// each calls f with every used bucket; f may change anything but the hash.
func (t *keyTable) each(f func(*bucket)) {
	for i := range t.b {
		if t.b[i].rec != 0 {
			f(&t.b[i])
		}
	}
}
