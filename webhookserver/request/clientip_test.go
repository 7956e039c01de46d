package request

import (
	"net/netip"
	"testing"
)

// The rule itself, the same for every front-end: conn is the connection's
// own peer; claims count only when it is vouched for.
func TestClientAddr(t *testing.T) {
	s := &Trust{Proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name    string
		conn    string
		vouched bool
		claimed string
		xff     []string
		want    string
	}{
		{"untrusted peer, nothing claimed", "192.0.2.1", false, "", []string{"203.0.113.9"}, "192.0.2.1"},
		{"untrusted peer claims an address", "192.0.2.1", false, "203.0.113.9", nil, "192.0.2.1"},
		{"untrusted peer claims a trusted proxy and XFF", "192.0.2.1", false, "10.1.1.1", []string{"203.0.113.9"}, "192.0.2.1"},
		{"no peer address, nothing vouched", "", false, "203.0.113.9", nil, ""},
		{"trusted peer over HTTP: XFF", "10.1.1.1", true, "", []string{"203.0.113.9"}, "203.0.113.9"},
		{"vouched peer states the client", "192.0.2.1", true, "203.0.113.9", []string{"198.51.100.1"}, "203.0.113.9"},
		{"vouched peer states a trusted proxy: XFF walked", "192.0.2.1", true, "10.1.1.1", []string{"198.51.100.1, 10.2.2.2"}, "198.51.100.1"},
		{"vouched peer states nothing: its own address", "192.0.2.1", true, "", []string{"198.51.100.1"}, "192.0.2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conn, claimed netip.Addr
			if tc.conn != "" {
				conn = a(tc.conn)
			}
			if tc.claimed != "" {
				claimed = a(tc.claimed)
			}
			got := s.ClientAddr(conn, tc.vouched, claimed, tc.xff)
			if (tc.want == "") != !got.IsValid() || got.IsValid() && got != a(tc.want) {
				t.Fatalf("client %v, want %q", got, tc.want)
			}
		})
	}
}
