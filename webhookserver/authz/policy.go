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
)

// Policy is one key record's policy compiled for the hot path: parsed
// allowlists and a permission bitmask, computed once per record change
// instead of once per request. A Policy is shared by every version of the
// key and never changes after Compile returns it.
type Policy struct {
	// class is the part that many keys share (interned when the key has
	// no restrictions).
	class *Class
	// text is the record's one allocation (see Compile): the versions'
	// hashes, 32 bytes each, then the record's name, the owner, the quota's
	// identity and the key ids. Layout's offsets cut it.
	text string
	Layout
}

// Layout is what a Policy holds besides its Class and its text: plain
// numbers, so that an index can keep 100,000 of them in one pointer-free
// table and rebuild the Policy on a lookup (see NewPolicy, Policy.Parts).
type Layout struct {
	// ExpiresAt is the key's expiry in Unix nanoseconds (see UnixNano); 0:
	// never.
	ExpiresAt int64
	// OwnerAt, LimitAt and IDsAt are where the owner, the quota's identity
	// and the key ids start in the text; the record's name ends at OwnerAt.
	OwnerAt uint32
	LimitAt uint32
	IDsAt   uint32
	// NKeys is the number of key versions, whose hashes open the text.
	NKeys uint16
	// Disabled refuses every version of the key.
	Disabled bool
}

// NewPolicy rebuilds a Policy from the parts Policy.Parts returned.
func NewPolicy(c *Class, text string, l Layout) Policy {
	return Policy{class: c, text: text, Layout: l}
}

// Parts returns what NewPolicy rebuilds p from: its class, its text and its
// layout.
func (p *Policy) Parts() (*Class, string, Layout) { return p.class, p.text, p.Layout }

// Class is what a policy says apart from whose key it is: keys with the same
// permissions, environment and limit, and no restrictions, share one. A Class
// never changes once compiled, so a front-end may render it once: Slot keeps
// what it rendered.
type Class struct {
	environment string
	permissions []string
	perms       Permission
	limit       int64

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
	key := c.environment + "\x00" + strings.Join(c.permissions, ",") + "\x00" + strconv.FormatInt(c.limit, 10)
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
func (p *Policy) Record() string { return p.text[int(p.NKeys)*len(apikey.Hash{}) : p.OwnerAt] }

// Owner returns the MeterrAPIKey as "namespace/name".
func (p *Policy) Owner() string { return p.text[p.OwnerAt:p.LimitAt] }

// Environment returns the key's environment.
func (p *Policy) Environment() string { return p.class.environment }

// Permissions returns the key's permissions: the known ones in their usual
// order, then those this build does not know (shown, never granted). The
// slice is the class's: callers must not modify it.
func (p *Policy) Permissions() []string { return p.class.permissions }

// RequestsPerHour returns the hourly limit; 0 means unlimited.
func (p *Policy) RequestsPerHour() int64 { return p.class.limit }

// LimitID returns the identity the rate limiter counts under: the owner's
// UID, so that rotating the key does not reset its quota.
func (p *Policy) LimitID() string { return p.text[p.LimitAt:p.IDsAt] }

// Restricted reports whether the key has IP or domain restrictions, which
// are all a decision needs the client address and the origin host for.
func (p *Policy) Restricted() bool { return p.class.ipRestricted || p.class.domainRestricted }

// KeyHash returns the hash of the record's i-th version.
func (p *Policy) KeyHash(i int) (h apikey.Hash) {
	copy(h[:], p.text[i*len(h):])
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
	// ExpiresAt is when this version stops being accepted (a tombstone from
	// then on); zero for the current key.
	ExpiresAt time.Time
}

// expired reports whether the version, or the whole key, has expired at now.
func (e *Entry) expired(now time.Time) bool {
	if !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt) {
		return true
	}
	exp := e.Policy.ExpiresAt
	return exp != 0 && now.UnixNano() >= exp
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

	Environment     string
	Permissions     []string
	RequestsPerHour int64
	IPAllowlist     []string
	Domains         []string
	Disabled        bool
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
	// KeyID is the version's identifier; ExpiresAt is zero for the current
	// key.
	KeyID     string
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
	cl := &Class{environment: r.Environment, limit: r.RequestsPerHour}
	p := &Policy{class: cl}
	p.Disabled = r.Disabled
	p.ExpiresAt = UnixNano(r.ExpiresAt)
	if cl.limit < 0 {
		problem("negative requestsPerHour %d; the key is refused", cl.limit)
		p.Disabled = true
		cl.limit = 0
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
	p.class = intern(cl)
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
		c.Keys = append(c.Keys, CompiledKey{Hash: h, ExpiresAt: v.ExpiresAt})
		ids = append(ids, id)
	}

	if len(c.Keys) > math.MaxUint16 {
		problem("%d key versions; the %d oldest are used", len(c.Keys), math.MaxUint16)
		c.Keys, ids = c.Keys[:math.MaxUint16], ids[:math.MaxUint16]
	}

	// What a record keeps (its versions' hashes, its name, its owner, its
	// quota's identity and the key ids) is one allocation: the index holds
	// 100,000 records, and every object in it is work for the garbage
	// collector.
	owner := r.Owner
	limitID := r.LimitID
	if limitID == "" {
		// A record without an owner UID still needs a quota of its own.
		limitID = "record/" + name
	}
	n := len(name) + len(owner) + len(limitID)
	for i, id := range ids {
		n += len(c.Keys[i].Hash) + len(id)
	}
	var b strings.Builder
	b.Grow(n)
	for _, k := range c.Keys {
		b.Write(k.Hash[:])
	}
	b.WriteString(name)
	p.OwnerAt = uint32(b.Len())
	b.WriteString(owner)
	p.LimitAt = uint32(b.Len())
	b.WriteString(limitID)
	p.IDsAt = uint32(b.Len())
	for i, id := range ids {
		c.Keys[i].KeyIDAt = uint32(b.Len())
		b.WriteString(id)
	}
	p.text = b.String()
	p.NKeys = uint16(len(c.Keys))
	for i, id := range ids {
		c.Keys[i].KeyID = p.text[c.Keys[i].KeyIDAt : int(c.Keys[i].KeyIDAt)+len(id)]
	}
	return c
}

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
