package request

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientIPHops(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		remote string
		xff    []string
		hops   int
		want   string
	}{
		{"10.1.1.1:80", []string{"192.0.2.1, 198.51.100.2, 203.0.113.3"}, 1, "203.0.113.3"},
		{"10.1.1.1:80", []string{"192.0.2.1, 198.51.100.2, 203.0.113.3"}, 2, "198.51.100.2"},
		{"10.1.1.1:80", []string{"192.0.2.1", "198.51.100.2, 203.0.113.3"}, 3, "192.0.2.1"},
		// Fewer addresses than hops: the left-most.
		{"10.1.1.1:80", []string{"198.51.100.2"}, 2, "198.51.100.2"},
		// None: the peer.
		{"10.1.1.1:80", nil, 2, "10.1.1.1"},
		// Trusted addresses in the chain count as hops too.
		{"10.1.1.1:80", []string{"192.0.2.1, 10.2.2.2"}, 1, "10.2.2.2"},
		// An untrusted peer's X-Forwarded-For is ignored.
		{"192.0.2.9:80", []string{"198.51.100.2, 203.0.113.3"}, 2, "192.0.2.9"},
		// A malformed entry stops the walk at the last address read.
		{"10.1.1.1:80", []string{"192.0.2.1, junk, 203.0.113.3"}, 3, "203.0.113.3"},
		{"10.1.1.1:80", []string{" , 198.51.100.2 ,, 203.0.113.3"}, 2, "198.51.100.2"},
		// hops 0 is --trusted-proxies alone.
		{"10.1.1.1:80", []string{"192.0.2.1, 10.2.2.2"}, 0, "192.0.2.1"},
	} {
		got := clientIPHops(tc.remote, tc.xff, trusted, tc.hops)
		if got.String() != tc.want {
			t.Errorf("clientIPHops(%q, %q, %d) = %s, want %s", tc.remote, tc.xff, tc.hops, got, tc.want)
		}
	}
}

func FuzzClientIPHops(f *testing.F) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, s := range []struct {
		remote, xff string
		hops        int
	}{
		{"10.0.0.1:80", "1.2.3.4, 5.6.7.8", 2}, {"10.0.0.1:80", "1.2.3.4", 3}, {"203.0.113.1:80", "1.2.3.4", 1},
		{"10.0.0.1:80", "garbage, 1.2.3.4", 2}, {"10.0.0.1:80", ",,, ,", 1}, {"[fd00::1]:80", "[2001:db8::1]:443, ::ffff:1.2.3.4", 2},
	} {
		f.Add(s.remote, s.xff, s.hops)
	}
	f.Fuzz(func(t *testing.T, remote, xff string, hops int) {
		hops = hops % (16 + 1) // --trusted-hops is at most 16
		if hops < 0 {
			hops = -hops
		}
		got := clientIPHops(remote, []string{xff}, trusted, hops)
		peer := parsePeer(remote)
		if got.IsValid() && (got.Is4In6() || got.Zone() != "") {
			t.Fatalf("clientIPHops(%q, %q, %d) = %v: not normalised", remote, xff, hops, got)
		}
		if !peer.IsValid() || !isTrusted(peer, trusted) {
			if got != peer {
				t.Fatalf("untrusted peer %q: XFF %q changed the client to %v", remote, xff, got)
			}
			return
		}
		if split := clientIPHops(remote, strings.Split(xff, ","), trusted, hops); split != got {
			t.Fatalf("%q: one header gives %v, split headers %v", xff, got, split)
		}
		if got == peer || hops == 0 {
			return
		}
		// Otherwise it is one of the addresses sent.
		for _, field := range strings.Split(xff, ",") {
			if a, ok := parseForwardedAddr(field); ok && a == got {
				return
			}
		}
		t.Fatalf("clientIPHops(%q, %q, %d) = %v: neither the peer nor an address of X-Forwarded-For", remote, xff, hops, got)
	})
}
