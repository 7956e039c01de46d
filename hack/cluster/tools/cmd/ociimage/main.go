// Command ociimage packs static binaries into a one-layer container image
// and writes it as an image tarball (the `docker save` layout, which
// `ctr images import` reads), without a container engine. It is the local
// cluster's own minimal image step (pause, CoreDNS, the smoke-test image);
// its flags follow the project's `make image` builder so either can do the
// job.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var binaries, files, entrypoint, args listFlag
	flag.Var(&binaries, "binary", "SRC:DST, an executable to put at DST (repeatable)")
	flag.Var(&files, "file", "SRC:DST, a regular file to put at DST, mode 0644 (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "the entrypoint, one argument per flag")
	flag.Var(&args, "arg", "the default arguments (CMD), one per flag")
	user := flag.String("user", "65532:65532", "the user the image runs as")
	tag := flag.String("tag", "", "the image reference, e.g. meterr.local/pause:1")
	out := flag.String("out", "", "the tarball to write")
	flag.Parse()
	if *tag == "" || *out == "" || len(binaries) == 0 {
		fmt.Fprintln(os.Stderr, "ociimage: --tag, --out and at least one --binary are required")
		os.Exit(2)
	}
	if err := build(binaries, files, entrypoint, args, *user, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func build(binaries, files, entrypoint, args []string, user, tag, out string) error {
	ref, err := name.NewTag(tag, name.WeakValidation)
	if err != nil {
		return err
	}
	layerTar, err := layer(binaries, files)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = args
	cf.Config.User = user
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// layer returns a tar of the files with their parent directories, owned by
// root, with a fixed time so that the same inputs give the same image.
func layer(binaries, files []string) ([]byte, error) {
	type entry struct {
		src  string
		mode int64
	}
	entries := map[string]entry{}
	add := func(specs []string, mode int64) error {
		for _, s := range specs {
			src, dst, ok := strings.Cut(s, ":")
			if !ok || !path.IsAbs(dst) {
				return fmt.Errorf("%q: want SRC:/ABSOLUTE/DST", s)
			}
			entries[path.Clean(dst)] = entry{src, mode}
		}
		return nil
	}
	if err := add(binaries, 0o755); err != nil {
		return nil, err
	}
	if err := add(files, 0o644); err != nil {
		return nil, err
	}
	dirs := map[string]bool{"/tmp": true}
	for dst := range entries {
		for d := path.Dir(dst); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	for f := range entries {
		names = append(names, f)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		hdr := &tar.Header{Name: strings.TrimPrefix(n, "/"), ModTime: epoch, Format: tar.FormatPAX}
		if dirs[n] {
			hdr.Typeflag, hdr.Mode, hdr.Name = tar.TypeDir, 0o755, hdr.Name+"/"
			if n == "/tmp" {
				hdr.Mode = 0o1777
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(entries[n].src)
		if err != nil {
			return nil, err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, entries[n].mode, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
