// Package exepages gives back the pages of the executable that start-up
// touched and serving does not need (--release-startup-pages).
//
// A Go binary's code and read-only data are mapped from its file, and a
// page once touched stays in the process's resident set: every package's
// initialisation (protobuf descriptors registered, schemes built, flag and
// kubeconfig parsing), the client's first list of every record, and the
// kernel's fault-around, which maps 64 KiB of neighbours with each page,
// leave the auth server with about twice the file-backed pages its request
// path uses. Release tells the kernel, once the server is ready, that the
// process no longer needs the pages of its executable's read-only mappings
// (madvise MADV_DONTNEED). They stay in the page cache, shared with every
// other process that maps the file; the ones serving touches come back at
// their first use, a minor fault each.
//
// Only mappings that cannot have been written are given back: the data
// segment's pages are the process's own (copy-on-write) and would be lost.
package exepages

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// span is one mapping of the executable: [start, end).
type span struct{ start, end uintptr }

// readOnlySpans returns the mappings of the file at path in r, a
// /proc/<pid>/maps, that nothing may write: private, without the w bit.
// A line is "start-end perms offset dev inode path", the path padded by
// spaces and possibly holding spaces itself.
func readOnlySpans(r io.Reader, path string) ([]span, error) {
	var out []span
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 6 {
			continue // anonymous
		}
		// The path is what follows the fifth field and its padding.
		rest := line
		for range 5 {
			rest = strings.TrimLeft(rest, " ")
			i := strings.IndexByte(rest, ' ')
			if i < 0 {
				rest = ""
				break
			}
			rest = rest[i:]
		}
		if strings.TrimLeft(rest, " ") != path {
			continue
		}
		perms := fields[1]
		if len(perms) != 4 || perms[1] == 'w' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, span{start: uintptr(start), end: uintptr(end)})
	}
	return out, sc.Err()
}

// rssFile reads RssFile (bytes) from r, a /proc/<pid>/status; 0 if absent.
func rssFile(r io.Reader) int64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "RssFile:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return kb << 10
	}
	return 0
}
