package authz

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
)

// Policy is one key record's policy compiled for the hot path: parsed
// allowlists and a permission bitmask, computed once per record change
// instead of once per request. A Policy is shared by every version of the
// key and never changes after Compile returns it.
//
// A Policy is its class, its text and its quota key, so that an index can
// keep 100,000 of them in pointer-free tables and rebuild one on a lookup
// (see NewPolicy, Policy.Parts).
type Policy struct {
	// class is the part that many keys share (interned when the key has
	// no restrictions).
	class *Class
	// quota is quota.Key of the quota's identity: what an in-memory
	// limiter counts under (see QuotaID), so that a decision need not
	// read the identity.
	quota uint64
	// text is the record's one allocation (see Compile): a head of
	// textHead bytes, then the quota's identity, the key ids, the versions'
	// hashes (32 bytes each), the record's name and the owner. The head
	// holds the offsets of the rest. A decision reads none of it (the
	// class, the quota key and the index's entry hold what it needs); the
	// front-ends read the owner for identity headers and decision logs.
	text string
}

// The head of a Policy's text: the key's expiry in Unix nanoseconds (0:
// never, little-endian), a reserved byte, the number of versions, and where
// the key ids, the hashes and the owner start (16 bits each, so a text is
// at most maxText bytes; the quota's identity starts at textHead, the
// record's name after the hashes). Each key id is preceded by its length.
const (
	headExpires  = 0
	headNKeys    = 9
	headIDsAt    = 10
	headHashesAt = 12
	headOwnerAt  = 14
	textHead     = 16

	maxText     = math.MaxUint16
	maxVersions = math.MaxUint8
)

// NewPolicy rebuilds a Policy from the parts Policy.Parts returned.
func NewPolicy(c *Class, text string, quotaKey uint64) Policy {
	return Policy{class: c, text: text, quota: quotaKey}
}

// Parts returns what NewPolicy rebuilds p from: its class, its text and its
// quota key.
func (p *Policy) Parts() (*Class, string, uint64) { return p.class, p.text, p.quota }

// QuotaKey returns quota.Key(p.LimitID()), computed once by Compile.
func (p *Policy) QuotaKey() uint64 { return p.quota }

// head16 reads the 16-bit number at i of the text's head; 0 for a zero
// Policy.
func (p *Policy) head16(i int) int {
	if len(p.text) < textHead {
		return 0
	}
	return int(p.text[i]) | int(p.text[i+1])<<8
}

// Disabled reports whether every version of the key is refused.
func (p *Policy) Disabled() bool { return p.class != nil && p.class.disabled }

// ExpiresAt is when every version of the key stops being accepted, in Unix
// nanoseconds (see UnixNano); 0 means never.
func (p *Policy) ExpiresAt() int64 {
	t := p.text
	if len(t) < textHead {
		return 0
	}
	return int64(uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24 |
		uint64(t[4])<<32 | uint64(t[5])<<40 | uint64(t[6])<<48 | uint64(t[7])<<56)
}

// NKeys returns the number of the key's versions (see KeyHash).
func (p *Policy) NKeys() int {
	if len(p.text) < textHead {
		return 0
	}
	return int(p.text[headNKeys])
}

// Class is what a policy says apart from whose key it is: keys with the same
// permissions, environment and limit, and no restrictions, share one. A Class
// never changes once compiled, so a front-end may render it once: Slot keeps
// what it rendered.
type Class struct {
	environment string
	permissions []string
	perms       Permission
	limit       quota.Limit
	// disabled refuses every key of the class: disabled keys have classes
	// of their own, so a decision learns it from the class.
	disabled bool

	// ipRestricted and domainRestricted stay true when every entry of a
	// non-empty list failed to parse, so a bad entry narrows access instead
	// of lifting the restriction.
	ipRestricted     bool
	allow            []netip.Prefix
	domainRestricted bool
	domains          []domainPattern

	slot atomic.Value
}

// Slot is where a front-end keeps what it rendered of the class (header
// values, answer fragments), computed on first use: authz never reads it.
// Whatever is stored there must not change afterwards, and always be of one
// type.
func (c *Class) Slot() *atomic.Value { return &c.slot }

// classes interns the policy classes of unrestricted keys.
var classes = struct {
	sync.Mutex
	m map[string]*Class
}{m: map[string]*Class{}}

// maxClasses bounds the intern table; past it classes are simply not shared.
const maxClasses = 4096

func intern(c *Class) *Class {
	if c.ipRestricted || c.domainRestricted {
		return c
	}
	key := c.environment + "\x00" + strings.Join(c.permissions, ",") + "\x00" + strconv.FormatInt(c.limit.Count, 10) + "/" + strconv.FormatInt(c.limit.Window.Seconds(), 10) +
		"\x00" + strconv.FormatBool(c.disabled)
	classes.Lock()
	defer classes.Unlock()
	if have, ok := classes.m[key]; ok {
		return have
	}
	if len(classes.m) < maxClasses {
		classes.m[key] = c
	}
	return c
}

// Class returns the policy's class.
func (p *Policy) Class() *Class { return p.class }

// Record returns the name of the key-record Secret the policy came from.
func (p *Policy) Record() string {
	return p.text[p.head16(headHashesAt)+p.NKeys()*len(apikey.Hash{}) : p.head16(headOwnerAt)]
}

// Owner returns the MeterrAPIKey as "namespace/name".
func (p *Policy) Owner() string { return p.text[p.head16(headOwnerAt):] }

// Environment returns the key's environment.
func (p *Policy) Environment() string { return p.class.environment }

// Permissions returns the key's permissions: the known ones in their usual
// order, then those this build does not know (shown, never granted). The
// slice is the class's: callers must not modify it.
func (p *Policy) Permissions() []string { return p.class.permissions }

// Limit returns the key's limit: a count per window (a zero count is
// unlimited).
func (p *Policy) Limit() quota.Limit { return p.class.limit }

// LimitID returns the identity the rate limiter counts under: the owner's
// UID, so that rotating the key does not reset its quota.
func (p *Policy) LimitID() string { return limitIDOf(p.text) }

// QuotaID returns the identity the rate limiter counts under, as a limiter
// receives it: the key computed once by Compile, and the name (LimitID)
// read from the policy's text only if a limiter asks for it.
func (p *Policy) QuotaID() quota.ID { return quota.NewID(p.quota, p.text, limitIDOf) }

// limitIDOf is LimitID of a policy's text.
func limitIDOf(text string) string {
	if len(text) < textHead {
		return ""
	}
	return text[textHead : int(text[headIDsAt])|int(text[headIDsAt+1])<<8]
}

// Restricted reports whether the key has IP or domain restrictions, which
// are all a decision needs the client address and the origin host for.
func (p *Policy) Restricted() bool { return p.class.ipRestricted || p.class.domainRestricted }

// KeyID returns the id of the record's i-th version.
func (p *Policy) KeyID(i int) string {
	at := p.head16(headIDsAt)
	for range i {
		at += 1 + int(p.text[at])
	}
	return p.text[at+1 : at+1+int(p.text[at])]
}

// KeyIDOf returns the id of the record's version whose hash is h, "" if the
// record has none.
func (p *Policy) KeyIDOf(h apikey.Hash) string {
	for i := range p.NKeys() {
		if p.KeyHash(i) == h {
			return p.KeyID(i)
		}
	}
	return ""
}

// KeyHash returns the hash of the record's i-th version.
func (p *Policy) KeyHash(i int) (h apikey.Hash) {
	copy(h[:], p.text[p.head16(headHashesAt)+i*len(h):])
	return h
}

func (c *Class) allowsIP(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, pre := range c.allow {
		if pre.Contains(a) {
			return true
		}
	}
	return false
}

func (c *Class) allowsHost(host string) bool {
	if host == "" {
		return false
	}
	for _, d := range c.domains {
		if d.match(host) {
			return true
		}
	}
	return false
}

// Entry is what a lookup finds for one key version. It is a plain value,
// built on each lookup from the index's pointer-free table.
type Entry struct {
	// Policy is the record's, the same for every version of the key. Its
	// strings are the index's and must not be kept beyond the request.
	Policy Policy
	// KeyID is the version's short, non-secret identifier.
	KeyID string
	// ExpiresAt is when this version stops being accepted: its own expiry
	// (a tombstone from then on) or the whole key's, whichever comes first
	// (see CompiledKey); zero for never.
	ExpiresAt time.Time
	// Use records the version's last accepted use (Use.Mark); empty
	// when the index keeps no usage.
	Use Use
}

// expired reports whether the version, or the whole key, has expired at now.
func (e *Entry) expired(now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

// RecordSpec is a key record as Compile reads it: plain values, so that
// authz needs no Kubernetes type (the index converts a record.Record).
type RecordSpec struct {
	// Name is the key-record Secret's name.
	Name string
	// Owner is the MeterrAPIKey as "namespace/name".
	Owner string
	// LimitID is the identity the rate limiter counts under (the owner's
	// UID); "" counts under "record/" + Name.
	LimitID string

	Environment string
	Permissions []string
	// Limit is a count per window; a zero Count is unlimited, a zero
	// Window hourly.
	Limit       quota.Limit
	IPAllowlist []string
	Domains     []string
	Disabled    bool
	// ExpiresAt ends every version; zero means never.
	ExpiresAt time.Time

	Versions []VersionSpec
	// Created is the record Secret's metadata.creationTimestamp (see
	// CompiledRecord.Created).
	Created time.Time
}

// VersionSpec is one key version of a RecordSpec.
type VersionSpec struct {
	// ID is the version's identifier; "" or an unusable one is derived from
	// the hash.
	ID string
	// Hash is the key's SHA-256 in hex.
	Hash string
	// ExpiresAt is when the version stops being accepted; zero for the
	// current key.
	ExpiresAt time.Time
}

// CompiledKey is one key version of a compiled record.
type CompiledKey struct {
	Hash apikey.Hash
	// KeyID is the version's identifier.
	KeyID string
	// ExpiresAt is when the version stops being accepted: the earlier of
	// its own expiry (zero for the current key) and the key's.
	ExpiresAt time.Time
	// KeyIDAt is where KeyID starts in the policy's text.
	KeyIDAt uint32
}

// CompiledRecord is a key record ready for an index.
type CompiledRecord struct {
	Policy *Policy
	Keys   []CompiledKey
	// Created is the record Secret's metadata.creationTimestamp, set by
	// the API server: when two records claim one key hash, the one
	// created first keeps it (see the index's Install).
	Created time.Time
	// Problems lists the parts of the record that could not be used. They
	// fail closed: a version with a bad hash is left out, a bad allowlist
	// entry or domain allows nothing, a negative limit disables the key.
	Problems []error
}

// Compile prepares a key record for the hot path. It never fails as a
// whole; see CompiledRecord.Problems.
func Compile(r *RecordSpec) *CompiledRecord {
	name := r.Name
	c := &CompiledRecord{Created: r.Created}
	problem := func(format string, args ...any) {
		c.Problems = append(c.Problems, fmt.Errorf("key record %s: "+format, append([]any{name}, args...)...))
	}
	cl := &Class{environment: r.Environment, limit: r.Limit}
	if cl.limit.Window == (quota.Window{}) {
		cl.limit.Window = quota.Hourly
	}
	p := &Policy{class: cl}
	disabled := r.Disabled
	if cl.limit.Count < 0 {
		problem("negative requestsPerHour %d; the key is refused", cl.limit.Count)
		disabled = true
		cl.limit.Count = 0
	}

	// Known permissions first, in their usual order; then, for forward
	// compatibility, names this build does not know: shown, never granted.
	seen := map[string]bool{}
	for _, n := range permissionNames {
		for _, s := range r.Permissions {
			if s == n.name && !seen[s] {
				seen[s] = true
				cl.perms |= n.bit
				cl.permissions = append(cl.permissions, s)
			}
		}
	}
	for _, s := range r.Permissions {
		if seen[s] {
			continue
		}
		seen[s] = true
		if !validToken(s) {
			problem("permission %q is not a valid name; ignored", s)
			continue
		}
		cl.permissions = append(cl.permissions, s)
	}

	if len(r.IPAllowlist) > 0 {
		cl.ipRestricted = true
		for _, s := range r.IPAllowlist {
			pre, err := ParseAllowEntry(s)
			if err != nil {
				problem("ipAllowlist: %v; it allows nothing", err)
				continue
			}
			cl.allow = append(cl.allow, pre)
		}
	}
	if len(r.Domains) > 0 {
		cl.domainRestricted = true
		for _, s := range r.Domains {
			d, err := parseDomainPattern(s)
			if err != nil {
				problem("domains: %v; it allows nothing", err)
				continue
			}
			cl.domains = append(cl.domains, d)
		}
	}

	// What a record keeps (its quota's identity, the key ids, its
	// versions' hashes, its name and its owner) is one allocation: the index
	// holds 100,000 records, and every object in it is work for the garbage
	// collector.
	owner := r.Owner
	limitID := r.LimitID
	if limitID == "" {
		// A record without an owner UID still needs a quota of its own.
		limitID = "record/" + name
	}
	n := textHead + len(limitID) + len(name) + len(owner)
	oversized := n > maxText
	if oversized {
		// Names of Kubernetes objects (a Secret's at most 253 bytes) are far
		// shorter: nothing real gets here. A refused key counts nothing, so
		// its quota identity does not matter.
		problem("name, owner and quota identity take %d bytes, more than %d; the key is refused", n, maxText)
		disabled, owner, limitID = true, "", "refused"
		name = name[:min(len(name), maxText-textHead-len(limitID))]
		n = textHead + len(limitID) + len(name)
	}
	cl.disabled = disabled
	p.class = intern(cl)
	p.quota = quota.Key(limitID)
	c.Policy = p

	seenHash := make(map[apikey.Hash]bool, len(r.Versions))
	ids := make([]string, 0, len(r.Versions))
	for i, v := range r.Versions {
		h, err := apikey.ParseHash(v.Hash)
		if err != nil {
			problem("key version %d (id %q): %v; left out", i, v.ID, err)
			continue
		}
		if seenHash[h] {
			problem("key version %d (id %q) repeats an earlier version; left out", i, v.ID)
			continue
		}
		seenHash[h] = true
		id := v.ID
		if id == "" || !validToken(id) {
			id = h.ID()
		}
		// A version stops being accepted at its own expiry or the key's,
		// whichever comes first: a decision reads one time.
		exp := v.ExpiresAt
		if !r.ExpiresAt.IsZero() && (exp.IsZero() || r.ExpiresAt.Before(exp)) {
			exp = r.ExpiresAt
		}
		c.Keys = append(c.Keys, CompiledKey{Hash: h, ExpiresAt: exp})
		ids = append(ids, id)
	}
	if oversized {
		c.Keys, ids = nil, nil
	}

	used := 0
	for used < len(c.Keys) && used < maxVersions && n+len(c.Keys[used].Hash)+1+len(ids[used]) <= maxText {
		n += len(c.Keys[used].Hash) + 1 + len(ids[used])
		used++
	}
	if used < len(c.Keys) {
		problem("%d key versions; the %d oldest are used", len(c.Keys), used)
		c.Keys, ids = c.Keys[:used], ids[:used]
	}

	head := make([]byte, textHead, n)
	exp := uint64(UnixNano(r.ExpiresAt))
	for i := range 8 {
		head[headExpires+i] = byte(exp >> (8 * i))
	}
	head[headNKeys] = byte(len(c.Keys))
	b := append(head, limitID...)
	put16(b, headIDsAt, len(b))
	for i, id := range ids {
		b = append(b, byte(len(id))) // validToken: at most 128
		c.Keys[i].KeyIDAt = uint32(len(b))
		b = append(b, id...)
	}
	put16(b, headHashesAt, len(b))
	for _, k := range c.Keys {
		b = append(b, k.Hash[:]...)
	}
	b = append(b, name...)
	put16(b, headOwnerAt, len(b))
	b = append(b, owner...)
	p.text = string(b)
	for i, id := range ids {
		c.Keys[i].KeyID = p.text[c.Keys[i].KeyIDAt : int(c.Keys[i].KeyIDAt)+len(id)]
	}
	return c
}

func put16(b []byte, at, v int) { b[at], b[at+1] = byte(v), byte(v>>8) }

// UnixNano returns t in Unix nanoseconds, 0 for the zero time; times beyond
// what int64 nanoseconds hold are clamped (the API server's range is wider),
// and a time at exactly the epoch is moved by a nanosecond so 0 keeps
// meaning "none".
func UnixNano(t time.Time) int64 {
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

// validToken reports whether s is a short identifier safe in a header value.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}
