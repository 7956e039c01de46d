package exepages

import (
	"fmt"
	"os"
	"syscall"
)

// Release gives back the resident pages of the executable's read-only
// mappings and returns the process's file-backed resident bytes before and
// after. It is safe at any time (a page needed again is mapped again), and
// meant for once, when start-up is over.
func Release() (before, after int64, err error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, 0, fmt.Errorf("finding the executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, 0, err
	}
	spans, err := readOnlySpans(f, exe)
	_ = f.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("reading /proc/self/maps: %w", err)
	}
	before = selfRSSFile()
	for _, s := range spans {
		// Only the kernel's page tables change: the addresses stay mapped
		// and readable, so this is safe while other goroutines run code
		// and read data in the range.
		//nolint:gosec // an address range of our own mapping, not a Go pointer
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, s.start, s.end-s.start, syscall.MADV_DONTNEED); e != 0 {
			return before, selfRSSFile(), fmt.Errorf("madvise: %w", e)
		}
	}
	return before, selfRSSFile(), nil
}

func selfRSSFile() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	return rssFile(f)
}
