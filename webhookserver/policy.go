package webhookserver

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

// permission is a set of permissions as a bitmask.
type permission uint8

const (
	permRead permission = 1 << iota
	permWrite
	permAdmin
)

// permissionNames lists the permissions this build knows, in the order they
// are shown.
var permissionNames = [...]struct {
	name string
	bit  permission
}{{"read", permRead}, {"write", permWrite}, {"admin", permAdmin}}

func parsePermission(s string) (permission, bool) {
	for _, p := range permissionNames {
		if s == p.name {
			return p.bit, true
		}
	}
	return 0, false
}

// grants reports whether a key holding p may do everything in need. admin
// grants everything.
func (p permission) grants(need permission) bool {
	return p&permAdmin != 0 || p&need == need
}

// String returns the names in p, comma-separated.
func (p permission) String() string {
	var names []string
	for _, n := range permissionNames {
		if p&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// Policy is one key record's policy compiled for the hot path: parsed
// allowlists, a permission bitmask and the header values and JSON fragments
// every answer needs, computed once per record change instead of once per
// request. A Policy is shared by every version of the key and never changes
// after Compile returns it.
type Policy struct {
	// policyClass is the part that many keys share (interned when the key
	// has no restrictions).
	*policyClass
	// text is the record's one allocation (see Compile): the versions'
	// hashes, 32 bytes each, then the record's name, the owner, the quota's
	// identity and the key ids. The offsets below cut it.
	text      string
	expiresAt int64 // Unix nanoseconds; 0: never
	ownerAt   uint32
	limitAt   uint32
	idsAt     uint32
	nKeys     uint16
	disabled  bool
}

// policyClass is what a policy says apart from whose key it is: keys with
// the same permissions, environment and limit, and no restrictions, share one.
type policyClass struct {
	environment string
	permissions []string
	perms       permission
	limit       int64

	// ipRestricted and domainRestricted stay true when every entry of a
	// non-empty list failed to parse, so a bad entry narrows access instead
	// of lifting the restriction.
	ipRestricted     bool
	allow            []netip.Prefix
	domainRestricted bool
	domains          []domainPattern

	// Header values, shared by every answer; never mutated.
	hPermissions []string
	hEnvironment []string
	hLimit       []string
	hPolicy      []string
	// okTail is the 200 answer after the key id, up to `"rate_limit":`.
	okTail []byte
}

// classes interns the policy classes of unrestricted keys.
var classes = struct {
	sync.Mutex
	m map[string]*policyClass
}{m: map[string]*policyClass{}}

// maxClasses bounds the intern table; past it classes are simply not shared.
const maxClasses = 4096

func intern(c *policyClass) *policyClass {
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

// Record returns the name of the key-record Secret the policy came from.
func (p *Policy) Record() string { return p.text[int(p.nKeys)*len(apikey.Hash{}) : p.ownerAt] }

// Owner returns the MeterrAPIKey as "namespace/name".
func (p *Policy) Owner() string { return p.text[p.ownerAt:p.limitAt] }

// Environment returns the key's environment.
func (p *Policy) Environment() string { return p.environment }

// Permissions returns the key's permissions.
func (p *Policy) Permissions() []string { return append([]string(nil), p.permissions...) }

// RequestsPerHour returns the hourly limit; 0 means unlimited.
func (p *Policy) RequestsPerHour() int64 { return p.limit }

// Disabled reports whether every version of the key is refused.
func (p *Policy) Disabled() bool { return p.disabled }

// ExpiresAt returns the time after which every version is refused, or the
// zero time.
func (p *Policy) ExpiresAt() time.Time {
	if p.expiresAt == 0 {
		return time.Time{}
	}
	return time.Unix(0, p.expiresAt)
}

// LimitID returns the identity the rate limiter counts under: the owner's
// UID, so that rotating the key does not reset its quota.
func (p *Policy) LimitID() string { return p.text[p.limitAt:p.idsAt] }

// hash returns the hash of the record's i-th version.
func (p *Policy) hash(i int) (h apikey.Hash) {
	copy(h[:], p.text[i*len(h):])
	return h
}

func (p *Policy) allowsIP(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, pre := range p.allow {
		if pre.Contains(a) {
			return true
		}
	}
	return false
}

func (p *Policy) allowsHost(host string) bool {
	if host == "" {
		return false
	}
	for _, d := range p.domains {
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
	exp := e.Policy.expiresAt
	return exp != 0 && now.UnixNano() >= exp
}

// CompiledKey is one key version of a compiled record.
type CompiledKey struct {
	Hash apikey.Hash
	// KeyID is the version's identifier; ExpiresAt is zero for the current
	// key.
	KeyID     string
	ExpiresAt time.Time
	// idOff is where KeyID starts in the policy's text.
	idOff uint32
}

// CompiledRecord is a key record ready for an index.
type CompiledRecord struct {
	Policy *Policy
	Keys   []CompiledKey
	// Created is the record Secret's metadata.creationTimestamp, set by
	// the API server: when two records claim one key hash, the one
	// created first keeps it (see MemoryIndex.Install).
	Created time.Time
	// Problems lists the parts of the record that could not be used. They
	// fail closed: a version with a bad hash is left out, a bad allowlist
	// entry or domain allows nothing, a negative limit disables the key.
	Problems []error
}

// Compile prepares a key record (the Secret named name, created at created)
// for the hot path. It never fails as a whole; see CompiledRecord.Problems.
func Compile(name string, r *record.Record, created time.Time) *CompiledRecord {
	c := &CompiledRecord{Created: created}
	problem := func(format string, args ...any) {
		c.Problems = append(c.Problems, fmt.Errorf("key record %s: "+format, append([]any{name}, args...)...))
	}
	pol := r.Policy
	p := &Policy{
		policyClass: &policyClass{environment: pol.Environment, limit: pol.RequestsPerHour},
		disabled:    pol.Disabled,
	}
	if pol.ExpiresAt != nil {
		p.expiresAt = unixNano(pol.ExpiresAt.Time)
	}
	if p.limit < 0 {
		problem("negative requestsPerHour %d; the key is refused", p.limit)
		p.disabled = true
		p.limit = 0
	}

	// Known permissions first, in their usual order; then, for forward
	// compatibility, names this build does not know: shown, never granted.
	seen := map[string]bool{}
	for _, n := range permissionNames {
		for _, s := range pol.Permissions {
			if s == n.name && !seen[s] {
				seen[s] = true
				p.perms |= n.bit
				p.permissions = append(p.permissions, s)
			}
		}
	}
	for _, s := range pol.Permissions {
		if seen[s] {
			continue
		}
		seen[s] = true
		if !validToken(s) {
			problem("permission %q is not a valid name; ignored", s)
			continue
		}
		p.permissions = append(p.permissions, s)
	}

	if len(pol.IPAllowlist) > 0 {
		p.ipRestricted = true
		for _, s := range pol.IPAllowlist {
			pre, err := parseAllowEntry(s)
			if err != nil {
				problem("ipAllowlist: %v; it allows nothing", err)
				continue
			}
			p.allow = append(p.allow, pre)
		}
	}
	if len(pol.Domains) > 0 {
		p.domainRestricted = true
		for _, s := range pol.Domains {
			d, err := parseDomainPattern(s)
			if err != nil {
				problem("domains: %v; it allows nothing", err)
				continue
			}
			p.domains = append(p.domains, d)
		}
	}

	permHeader := strings.Join(p.permissions, ",")
	p.hPermissions = []string{permHeader}
	p.hEnvironment = []string{p.environment}
	if p.limit > 0 {
		p.hLimit = []string{strconv.FormatInt(p.limit, 10)}
		p.hPolicy = []string{`"hourly";q=` + strconv.FormatInt(p.limit, 10) + `;w=3600`}
	}
	p.okTail = appendOKTail(nil, p.policyClass)
	p.policyClass = intern(p.policyClass)
	c.Policy = p

	seenHash := make(map[apikey.Hash]bool, len(r.Keys))
	ids := make([]string, 0, len(r.Keys))
	for i, v := range r.Keys {
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
		k := CompiledKey{Hash: h}
		if v.ExpiresAt != nil {
			k.ExpiresAt = v.ExpiresAt.Time
		}
		c.Keys = append(c.Keys, k)
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
	owner := r.Owner.String()
	limitID := string(r.Owner.UID)
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
	p.ownerAt = uint32(b.Len())
	b.WriteString(owner)
	p.limitAt = uint32(b.Len())
	b.WriteString(limitID)
	p.idsAt = uint32(b.Len())
	for i, id := range ids {
		c.Keys[i].idOff = uint32(b.Len())
		b.WriteString(id)
	}
	p.text = b.String()
	p.nKeys = uint16(len(c.Keys))
	for i, id := range ids {
		c.Keys[i].KeyID = p.text[c.Keys[i].idOff : int(c.Keys[i].idOff)+len(id)]
	}
	return c
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

// parseAllowEntry reads an address or a CIDR. IPv4-mapped IPv6 forms are
// turned into IPv4, as client addresses are.
func parseAllowEntry(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pre, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	if a := pre.Addr(); a.Is4In6() {
		if pre.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q mixes IPv4-mapped and plain IPv6 addresses", s)
		}
		pre = netip.PrefixFrom(a.Unmap(), pre.Bits()-96)
	}
	return pre.Masked(), nil
}

// domainPattern is an exact host name or, for "*.example.com", a suffix
// ".example.com" that matches subdomains at any depth but not the bare domain.
type domainPattern struct {
	host     string
	wildcard bool
}

func parseDomainPattern(s string) (domainPattern, error) {
	d := strings.TrimSuffix(strings.ToLower(s), ".")
	wildcard := strings.HasPrefix(d, "*.")
	if wildcard {
		d = d[1:] // keep the dot: ".example.com"
	}
	body := strings.TrimPrefix(d, ".")
	if body == "" || !validHostName(body) {
		return domainPattern{}, fmt.Errorf("%q is not a host name or *.host name", s)
	}
	return domainPattern{host: d, wildcard: wildcard}, nil
}

// validHostName accepts lower-case LDH labels separated by single dots.
func validHostName(s string) bool {
	if len(s) > 253 || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	prevDot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
		prevDot = false
	}
	return true
}

// match compares a host (already without port and trailing dot) ASCII
// case-insensitively.
func (d domainPattern) match(host string) bool {
	if !d.wildcard {
		return asciiEqualFold(host, d.host)
	}
	// ".example.com": host must be longer, and the label before the suffix
	// must not be empty ("a..example.com" or ".example.com").
	if len(host) <= len(d.host) {
		return false
	}
	cut := len(host) - len(d.host)
	return asciiEqualFold(host[cut:], d.host) && host[cut-1] != '.'
}

// asciiEqualFold is strings.EqualFold restricted to ASCII, so that no Unicode
// folding ("K" for the Kelvin sign) can make two different hosts equal.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
