package index

import (
	"syscall"
	"unsafe"
)

// adviseHugePages asks the kernel to back the memory of s with transparent
// huge pages where it can: MADV_HUGEPAGE on the 2 MiB pages wholly inside s.
// The usual setting ("madvise") gives huge pages only to memory so marked,
// and the Go runtime marks none of its heap. It is advice: when the kernel
// has none to give, or huge pages are off, nothing changes.
func adviseHugePages[T any](s []T) { advise(s, 14 /* MADV_HUGEPAGE */) }

// unadviseHugePages takes the advice back from memory about to be dropped:
// the Go runtime reuses its addresses for other objects, which must not be
// given huge pages (they would be filled whole and grow the RSS).
func unadviseHugePages[T any](s []T) { advise(s, 15 /* MADV_NOHUGEPAGE */) }

func advise[T any](s []T, advice int) {
	if len(s) == 0 {
		return
	}
	const huge = 2 << 20
	p := unsafe.Pointer(unsafe.SliceData(s)) //nolint:gosec // only the address is used, to round it to huge pages
	start := uintptr(p)
	end := start + uintptr(len(s))*unsafe.Sizeof(s[0])
	aligned := (start + huge - 1) &^ (huge - 1)
	end &^= huge - 1
	if end <= aligned {
		return
	}
	//nolint:gosec // [aligned, end) lies within s
	_ = syscall.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, aligned-start)), end-aligned), advice)
}
