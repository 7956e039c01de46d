package authz

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meterr/meterr-operator/internal/ascii"
)

// The restriction matchers: a key's IP allowlist (prefixes) and its domains
// (exact host names or *.suffix patterns), and their parsers.

// ParseAllowEntry reads an address or a CIDR. IPv4-mapped IPv6 forms are
// turned into IPv4, as client addresses are.
func ParseAllowEntry(s string) (netip.Prefix, error) {
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
		return ascii.EqualFold(host, d.host)
	}
	// ".example.com": host must be longer, and the label before the suffix
	// must not be empty ("a..example.com" or ".example.com").
	if len(host) <= len(d.host) {
		return false
	}
	cut := len(host) - len(d.host)
	return ascii.EqualFold(host[cut:], d.host) && host[cut-1] != '.'
}
