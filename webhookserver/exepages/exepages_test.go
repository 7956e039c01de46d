package exepages

import (
	"reflect"
	"strings"
	"testing"
)

func TestReadOnlySpans(t *testing.T) {
	const maps = `00400000-013d9000 r-xp 00000000 fe:00 11125632                           /app/meterr-auth-server
013d9000-024ef000 r--p 00fd9000 fe:00 11125632                           /app/meterr-auth-server
024ef000-0258b000 rw-p 020ef000 fe:00 11125632                           /app/meterr-auth-server
0258b000-045ad000 rw-p 00000000 00:00 0 
c000000000-c004000000 rw-p 00000000 00:00 0 
7f00a0000000-7f00a0021000 r-xp 00000000 fe:00 42                         /app/meterr-auth-server-old
7f00b0000000-7f00b0001000 r--s 00000000 fe:00 11125632                   /app/meterr-auth-server
7f00c0000000-7f00c0002000 r--p 00000000 fe:00 77                         /app/dir with space/bin
7f00c0002000-7f00c0001000 r--p 00000000 fe:00 77                         /app/meterr-auth-server
zz-7f00c0003000 r--p 00000000 fe:00 77                                   /app/meterr-auth-server
7ffd5c3f1000-7ffd5c412000 rw-p 00000000 00:00 0                          [stack]
7ffd5c5e6000-7ffd5c5e8000 r-xp 00000000 00:00 0                          [vdso]
`
	for _, tc := range []struct {
		name, path string
		want       []span
	}{
		{"code and read-only data; not the data segment, a shared mapping, another file, a bad range", "/app/meterr-auth-server",
			[]span{{0x400000, 0x13d9000}, {0x13d9000, 0x24ef000}}},
		{"a path with spaces", "/app/dir with space/bin", []span{{0x7f00c0000000, 0x7f00c0002000}}},
		{"a file not mapped", "/nowhere", nil},
	} {
		got, err := readOnlySpans(strings.NewReader(maps), tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %x, want %x", tc.name, got, tc.want)
		}
	}
}

func TestRSSFile(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   int64
	}{
		{"Name:\tx\nVmRSS:\t   29012 kB\nRssAnon:\t    5584 kB\nRssFile:\t   23428 kB\nRssShmem:\t       0 kB\n", 23428 << 10},
		{"Name:\tx\n", 0},
		{"RssFile:\tlots kB\n", 0},
	} {
		if got := rssFile(strings.NewReader(tc.status)); got != tc.want {
			t.Errorf("rssFile(%q) = %d, want %d", tc.status, got, tc.want)
		}
	}
}
