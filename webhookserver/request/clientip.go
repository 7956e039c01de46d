package request

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Trust is the one trust rule's configuration: the peers whose
// X-Forwarded-For is believed (--trusted-proxies) and, when positive, the
// position from the right of X-Forwarded-For that is the client
// (--trusted-hops).
type Trust struct {
	Proxies []netip.Prefix
	Hops    int
}

// Vouches says whether a, a connection's peer, is a trusted proxy.
func (t *Trust) Vouches(a netip.Addr) bool { return isTrusted(a, t.Proxies) }

// Client returns the address r comes from, by the one trust rule.
func (t *Trust) Client(r *Request) netip.Addr {
	p := r.PeerAddr()
	return t.ClientAddr(p, r.Vouched || t.Vouches(p), r.Claimed, r.Headers.ForwardedFor())
}

// ClientAddr is the one rule by which every front-end decides where a
// request comes from. conn is the connection's own peer, the one address
// nobody on the path can forge; vouched says that peer proved it may speak
// for others: its address is in --trusted-proxies, or (gRPC) it presented a
// client certificate verified against --grpc-client-ca. Only then do the
// addresses it states count: claimed (Envoy's attributes.source.address;
// HTTP states none) is the client, and when that address, or the peer
// itself, is a trusted proxy, X-Forwarded-For is walked as forwardedClient
// reads it. An unvouched peer is the client, whatever it claims: otherwise
// any pod could borrow an allowlisted address, and spend the quota of a key
// allowlisted to it (issue 21). An invalid Addr means "unknown" and matches
// no allowlist.
func (t *Trust) ClientAddr(conn netip.Addr, vouched bool, claimed netip.Addr, xff []string) netip.Addr {
	if !vouched {
		return conn
	}
	from := conn
	if claimed.IsValid() {
		from = claimed
	}
	return forwardedClient(from, xff, t.Proxies, t.Hops)
}

// clientIP is forwardedClient from an http.Request.RemoteAddr, without
// --trusted-hops.
func clientIP(remoteAddr string, xff []string, trusted []netip.Prefix) netip.Addr {
	return clientIPHops(remoteAddr, xff, trusted, 0)
}

// clientIPHops is forwardedClient from an http.Request.RemoteAddr.
func clientIPHops(remoteAddr string, xff []string, trusted []netip.Prefix, hops int) netip.Addr {
	return forwardedClient(parsePeer(remoteAddr), xff, trusted, hops)
}

// forwardedClient returns the address a request comes from, given the
// address it reached a vouched-for front-end from: that address, unless it
// is a trusted proxy; then the right-most X-Forwarded-For address that is
// not a trusted proxy. Every proxy appends the address it received the
// request from, so walking from the right over trusted hops reaches the
// first address no trusted proxy vouches for beyond; anything left of it may
// be forged by the client. If every address is trusted the left-most one is
// the client. A malformed entry stops the walk: the last trusted address is
// used, which a client cannot choose.
//
// With --trusted-hops (hops > 0) the client is the hops-th X-Forwarded-For
// address from the right, whatever the addresses are: for chains of proxies
// whose addresses are not known in advance (a CDN, a cloud load balancer)
// but whose number is. With fewer addresses than hops the left-most is the
// client (the request skipped a hop; each address there was appended by a
// proxy). A malformed entry stops the walk at the last address read.
func forwardedClient(peer netip.Addr, xff []string, trusted []netip.Prefix, hops int) netip.Addr {
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	last, n := peer, 0
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for end := len(v); end >= 0; {
			start := strings.LastIndexByte(v[:end], ',') + 1
			field := v[start:end]
			end = start - 1
			if isOWS(field) {
				// Empty list elements (", ,") are allowed by the grammar.
				continue
			}
			a, ok := parseForwardedAddr(field)
			if !ok {
				return last
			}
			if n++; hops > 0 && n == hops || hops <= 0 && !isTrusted(a, trusted) {
				return a
			}
			last = a
		}
	}
	return last
}

func isOWS(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && s[i] != '\t' {
			return false
		}
	}
	return true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parsePeer reads http.Request.RemoteAddr ("ip:port", "[ipv6]:port").
func parsePeer(remoteAddr string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(remoteAddr); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// parseForwardedAddr reads one X-Forwarded-For element. Besides a bare
// address it accepts what some proxies write: "ip:port", "[ipv6]" and
// "[ipv6]:port".
func parseForwardedAddr(s string) (netip.Addr, bool) {
	s = strings.Trim(s, " \t")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

// ParseTrustedProxies reads the --trusted-proxies value: comma-separated
// CIDRs or single addresses, in canonical form.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := authz.ParseAllowEntry(f)
		if err != nil {
			return nil, err
		}
		if strings.Contains(f, "/") {
			if raw, err := netip.ParsePrefix(f); err == nil && raw != raw.Masked() {
				return nil, fmt.Errorf("%q is not in canonical form; did you mean %s?", f, raw.Masked())
			}
		}
		out = append(out, p)
	}
	return out, nil
}
