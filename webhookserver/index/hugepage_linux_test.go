package index

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// vmFlags returns the VmFlags of the mapping that holds address a
// (/proc/self/smaps).
func vmFlags(t *testing.T, a uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps:", err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// A mapping's first line is "start-end perms ...", in hex.
		if lo, hi, ok := strings.Cut(strings.Fields(line)[0], "-"); ok {
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uint64(a) >= l && uint64(a) < h
				continue
			}
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	t.Fatalf("no mapping holds %#x", a)
	return nil
}

func has(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// The key table's memory is marked for huge pages, and the mark is taken
// back when the table is dropped, so the Go runtime's later objects at those
// addresses are not given huge pages.
func TestHugePageAdvice(t *testing.T) {
	// Nothing to mark: no call, no crash.
	adviseHugePages([]bucket(nil))
	adviseHugePages(make([]byte, 100))
	s := make([]bucket, (8<<20)/64)
	adviseHugePages(s)
	start := uintptr(unsafe.Pointer(&s[0]))
	mid := (start + 4<<20) &^ (2<<20 - 1)
	if flags := vmFlags(t, mid); !has(flags, "hg") {
		t.Fatalf("advised memory has VmFlags %v, want hg", flags)
	}
	unadviseHugePages(s)
	if flags := vmFlags(t, mid); has(flags, "hg") || !has(flags, "nh") {
		t.Fatalf("memory taken back has VmFlags %v, want nh and no hg", flags)
	}
}
