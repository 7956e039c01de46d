package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// entry is one file or directory of a layer, its path relative to / (a
// directory's with a trailing slash).
type entry struct {
	name     string
	mode     int64
	uid, gid int
	body     []byte
}

func dir(name string, mode int64, uid, gid int) entry {
	return entry{name: strings.TrimPrefix(name, "/") + "/", mode: mode, uid: uid, gid: gid}
}

func file(name string, mode int64, body []byte) entry {
	return entry{name: strings.TrimPrefix(name, "/"), mode: mode, body: body}
}

// baseEntries is what distroless static:nonroot has that a static Go binary
// may need: users and groups for the UID:GID (os/user, and tools that print
// names), a home, a writable /tmp, and the CA bundle for TLS to anything but
// the API server (whose CA comes with the service account).
func baseEntries(uid, gid int, user string, caBundle []byte) []entry {
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	group := "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\n"
	entries := []entry{
		dir("/etc", 0o755, 0, 0),
		dir("/root", 0o700, 0, 0),
		// The sticky bit: anyone may create files, only their owner
		// removes them.
		dir("/tmp", 0o1777, 0, 0),
		// Go's resolver reads it to order files and DNS.
		file("/etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")),
	}
	if hasOwnHome(uid) {
		passwd += fmt.Sprintf("%s:x:%d:%d:%s:%s:/sbin/nologin\n", user, uid, gid, user, homeOf(user))
		entries = append(entries, dir("/home", 0o755, 0, 0), dir(homeOf(user), 0o700, uid, gid))
	}
	if gid != 0 && gid != 65534 && gid != 5 && gid != 50 {
		group += fmt.Sprintf("%s:x:%d:\n", user, gid)
	}
	entries = append(entries,
		file("/etc/passwd", 0o644, []byte(passwd)),
		file("/etc/group", 0o644, []byte(group)))
	if caBundle != nil {
		entries = append(entries,
			dir("/etc/ssl", 0o755, 0, 0),
			dir("/etc/ssl/certs", 0o755, 0, 0),
			file(CABundlePath, 0o644, caBundle))
	}
	return entries
}

// appEntries reads the files for platform p, with their parent directories.
func appEntries(files []File, p v1.Platform) ([]entry, error) {
	var entries []entry
	dirs := map[string]bool{}
	for _, f := range files {
		if f.Platform != nil && !f.Platform.Equals(p) {
			continue
		}
		body, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, err
		}
		mode := int64(0o644)
		if f.Executable {
			if err := checkStaticELF(f.Src, body, p); err != nil {
				return nil, err
			}
			mode = 0o755
		}
		for d := path.Dir(f.Dst); d != "/"; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				entries = append(entries, dir(d, 0o755, 0, 0))
			}
		}
		entries = append(entries, file(f.Dst, mode, body))
	}
	return entries, nil
}

// tarGzip writes entries as a gzipped tar, sorted by name (a parent before
// its children), every time mtime, every owner numeric.
func tarGzip(entries []entry, mtime time.Time) ([]byte, error) {
	sorted := append([]entry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for i, e := range sorted {
		if i > 0 && sorted[i-1].name == e.name {
			return nil, fmt.Errorf("%s twice in one layer", e.name)
		}
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
		}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// hasOwnHome: root and nobody are in every image; any other user gets an
// entry and a home of its own.
func hasOwnHome(uid int) bool { return uid != 0 && uid != 65534 }

// elfMachines maps GOARCH to the ELF machine (and byte order) a binary for
// it has.
var elfMachines = map[string]struct {
	machine elf.Machine
	order   binary.ByteOrder
}{
	"amd64":   {elf.EM_X86_64, binary.LittleEndian},
	"arm64":   {elf.EM_AARCH64, binary.LittleEndian},
	"arm":     {elf.EM_ARM, binary.LittleEndian},
	"386":     {elf.EM_386, binary.LittleEndian},
	"ppc64le": {elf.EM_PPC64, binary.LittleEndian},
	"s390x":   {elf.EM_S390, binary.BigEndian},
	"riscv64": {elf.EM_RISCV, binary.LittleEndian},
}

// checkStaticELF refuses a binary for another architecture, and a
// dynamically linked one: the image has no libc and no loader, so it could
// not start (with Go, CGO_ENABLED=0 makes it static).
func checkStaticELF(src string, body []byte, p v1.Platform) error {
	f, err := elf.NewFile(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", src, err)
	}
	defer f.Close()
	want := elfMachines[p.Architecture]
	if f.Machine != want.machine || f.ByteOrder != want.order {
		return fmt.Errorf("%s: built for %s (%s), not for %s", src, f.Machine, f.ByteOrder, p)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s: an ELF %s, not an executable", src, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (it needs a loader and libc, which the image does not have); build it static, with CGO_ENABLED=0 for Go", src)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s: needs shared libraries %v; build it static", src, libs)
	}
	return nil
}
