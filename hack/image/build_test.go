package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestImage: the image of one static binary, read back as an OCI layout:
// its index.json names it for containerd, its config runs the binary as
// 65532:65532 from /home/nonroot, its filesystem is distroless
// static:nonroot's facts plus the binary, and the binary runs.
func TestImage(t *testing.T) {
	spec := helloSpec(t)
	archive, sum := build(t, spec)
	img, desc := onlyImage(t, openLayout(t, archive))

	if desc.MediaType != types.OCIManifestSchema1 || desc.Digest != sum.Digest {
		t.Errorf("index.json's manifest: %s %s, want %s %s", desc.MediaType, desc.Digest, types.OCIManifestSchema1, sum.Digest)
	}
	wantAnn := map[string]string{
		"io.containerd.image.name":          "docker.io/library/hello:v1",
		"org.opencontainers.image.ref.name": "docker.io/library/hello:v1",
	}
	if !reflect.DeepEqual(desc.Annotations, wantAnn) {
		t.Errorf("index.json's annotations: %v, want %v", desc.Annotations, wantAnn)
	}
	if desc.Platform == nil || !desc.Platform.Equals(hostPlatform()) {
		t.Errorf("index.json's platform: %v", desc.Platform)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 2 {
		t.Fatalf("manifest: config %s, %d layers; want an OCI config and 2 layers", m.Config.MediaType, len(m.Layers))
	}
	for _, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %s: %s, want %s", l.Digest, l.MediaType, types.OCILayer)
		}
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want := v1.Config{
		User:       "65532:65532",
		Entrypoint: []string{"/hello"},
		Env:        []string{DefaultPath, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		WorkingDir: "/home/nonroot",
		Labels:     spec.Labels,
	}
	if !reflect.DeepEqual(cfg.Config, want) {
		t.Errorf("config:\n got %+v\nwant %+v", cfg.Config, want)
	}
	if cfg.OS != "linux" || cfg.Architecture != hostPlatform().Architecture {
		t.Errorf("config platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if !cfg.Created.Equal(spec.Created) {
		t.Errorf("created %v, want %v", cfg.Created.Time, spec.Created)
	}
	for _, h := range cfg.History {
		if !h.Created.Equal(spec.Created) {
			t.Errorf("history %q created %v, want %v", h.CreatedBy, h.Created.Time, spec.Created)
		}
	}

	files := flatten(t, img)
	ca, _ := os.ReadFile(spec.CABundle)
	bin, _ := os.ReadFile(spec.Files[0].Src)
	for _, c := range []struct {
		path     string
		mode     os.FileMode
		uid, gid int
		body     []byte
	}{
		{"/hello", 0o755, 0, 0, bin},
		{"/tmp", os.ModeDir | os.ModeSticky | 0o777, 0, 0, nil},
		{"/home/nonroot", os.ModeDir | 0o700, 65532, 65532, nil},
		{"/root", os.ModeDir | 0o700, 0, 0, nil},
		{"/etc/ssl/certs/ca-certificates.crt", 0o644, 0, 0, ca},
		{"/etc/passwd", 0o644, 0, 0, nil},
		{"/etc/group", 0o644, 0, 0, nil},
	} {
		f, ok := files[c.path]
		if !ok {
			t.Errorf("%s: not in the image", c.path)
			continue
		}
		if m := f.hdr.FileInfo().Mode(); m != c.mode || f.hdr.Uid != c.uid || f.hdr.Gid != c.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", c.path, m, f.hdr.Uid, f.hdr.Gid, c.mode, c.uid, c.gid)
		}
		if c.body != nil && !bytes.Equal(f.body, c.body) {
			t.Errorf("%s: not the file given", c.path)
		}
		if !f.hdr.ModTime.Equal(spec.Created) {
			t.Errorf("%s: mtime %v, want %v", c.path, f.hdr.ModTime, spec.Created)
		}
	}
	if p := string(files["/etc/passwd"].body); !strings.Contains(p, "\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n") {
		t.Errorf("/etc/passwd has no nonroot entry:\n%s", p)
	}
	if g := string(files["/etc/group"].body); !strings.Contains(g, "\nnonroot:x:65532:\n") {
		t.Errorf("/etc/group has no nonroot entry:\n%s", g)
	}
	// No shell, nor anything else to run but the binary.
	for p, f := range files {
		if f.hdr.FileInfo().Mode()&0o111 != 0 && !f.hdr.FileInfo().IsDir() && p != "/hello" {
			t.Errorf("%s: an executable besides the binary", p)
		}
	}
	if _, ok := files["/bin/sh"]; ok {
		t.Error("/bin/sh is in the image")
	}
	if out := runExtracted(t, files["/hello"].body); strings.TrimSpace(out) != helloOutput {
		t.Errorf("the binary from the image says %q", out)
	}
}

// TestDockerArchiveView: manifest.json names the same config and layers, so
// `crane push x.tar` (tarball.ImageFromPath), docker load before Docker 25
// and skopeo's docker-archive: read the same image.
func TestDockerArchiveView(t *testing.T) {
	archive, _ := build(t, helloSpec(t))
	oci, _ := onlyImage(t, openLayout(t, archive))

	tag, err := name.NewTag("hello:v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range []*name.Tag{nil, &tag} {
		docker, err := tarball.ImageFromPath(archive, tg)
		if err != nil {
			t.Fatalf("tarball.ImageFromPath(%v): %v", tg, err)
		}
		sameImage(t, oci, docker)
	}
	var manifest []dockerManifest
	if err := json.Unmarshal(readMember(t, archive, "manifest.json"), &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || !reflect.DeepEqual(manifest[0].RepoTags, []string{"hello:v1"}) {
		t.Errorf("manifest.json: %+v", manifest)
	}
}

// sameImage fails unless a and b have the same config and layers.
func sameImage(t *testing.T, a, b v1.Image) {
	t.Helper()
	ac, _ := a.ConfigName()
	bc, err := b.ConfigName()
	if err != nil || ac != bc {
		t.Errorf("config %s, want %s (%v)", bc, ac, err)
	}
	al, _ := a.Layers()
	bl, err := b.Layers()
	if err != nil || len(al) != len(bl) {
		t.Fatalf("%d layers, want %d (%v)", len(bl), len(al), err)
	}
	for i := range al {
		ad, _ := al[i].Digest()
		bd, err := bl[i].Digest()
		if err != nil || ad != bd {
			t.Errorf("layer %d: %s, want %s (%v)", i, bd, ad, err)
		}
	}
}

func readMember(t *testing.T, archive, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(untar(t, archive), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReproducible: the same inputs give the same bytes; another
// SOURCE_DATE_EPOCH gives another digest.
func TestReproducible(t *testing.T) {
	spec := helloSpec(t)
	a, sa := build(t, spec)
	b, sb := build(t, spec)
	if fileSHA256(t, a) != fileSHA256(t, b) || sa != sb {
		t.Errorf("two builds differ: %v and %v", sa, sb)
	}
	spec.Created = spec.Created.Add(time.Second)
	if _, sc := build(t, spec); sc.Digest == sa.Digest {
		t.Error("another SOURCE_DATE_EPOCH, the same digest")
	}
}

// TestMultiPlatform: several platforms make an OCI index, which index.json
// names; manifest.json lists each platform's image and tags the first only.
func TestMultiPlatform(t *testing.T) {
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	spec := helloSpec(t)
	spec.Platforms = []v1.Platform{amd64, arm64}
	spec.Files = []File{
		{Platform: &amd64, Src: fakeELF(t, elf.EM_X86_64), Dst: "/hello", Executable: true},
		{Platform: &arm64, Src: fakeELF(t, elf.EM_AARCH64), Dst: "/hello", Executable: true},
		{Src: spec.CABundle, Dst: "/etc/hello/config"},
	}
	archive, sum := build(t, spec)

	top := openLayout(t, archive)
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].MediaType != types.OCIImageIndex || m.Manifests[0].Digest != sum.Digest ||
		m.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/hello:v1" {
		t.Fatalf("index.json: %+v", m)
	}
	idx, err := top.ImageIndex(sum.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("the index has %d manifests, want 2", len(im.Manifests))
	}
	for i, p := range spec.Platforms {
		d := im.Manifests[i]
		if d.Platform == nil || !d.Platform.Equals(p) {
			t.Errorf("manifest %d: platform %v, want %v", i, d.Platform, p)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Architecture != p.Architecture {
			t.Errorf("%s: config says %s", p, cfg.Architecture)
		}
		files := flatten(t, img)
		if want, _ := os.ReadFile(spec.Files[i].Src); !bytes.Equal(files["/hello"].body, want) {
			t.Errorf("%s: /hello is not that platform's binary", p)
		}
		if f, ok := files["/etc/hello/config"]; !ok || f.hdr.FileInfo().Mode() != 0o644 {
			t.Errorf("%s: /etc/hello/config missing or not 0644", p)
		}
	}

	var manifest []dockerManifest
	if err := json.Unmarshal(readMember(t, archive, "manifest.json"), &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 2 || len(manifest[0].RepoTags) != 1 || len(manifest[1].RepoTags) != 0 {
		t.Errorf("manifest.json: %+v", manifest)
	}
	// crane push x.tar reads manifest.json without a tag: it must refuse
	// rather than push one platform as the whole.
	if _, err := tarball.ImageFromPath(archive, nil); err == nil {
		t.Error("tarball.ImageFromPath read a multi-platform archive as one image")
	}
}

// TestRefused: what would make an image that cannot start is refused, with
// a message that says what to do.
func TestRefused(t *testing.T) {
	text := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noCerts := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(noCerts, []byte("nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(*Spec)
		want   string
	}{
		{"another architecture", func(s *Spec) { s.Files[0].Src = fakeELF(t, elf.EM_S390) }, "built for EM_S390"},
		{"not ELF", func(s *Spec) { s.Files[0].Src = text }, "not an ELF executable"},
		{"no CA bundle", func(s *Spec) { s.CABundle = filepath.Join(t.TempDir(), "missing.crt") }, "install the ca-certificates package"},
		{"no certificate in the CA bundle", func(s *Spec) { s.CABundle = noCerts }, "no PEM certificate"},
		{"entrypoint not in the image", func(s *Spec) { s.Entrypoint = []string{"/other"} }, "the entrypoint /other is not among the files"},
		{"tag without a tag", func(s *Spec) { s.Tag = "hello" }, "want REPOSITORY:TAG"},
		{"relative destination", func(s *Spec) { s.Files[0].Dst = "hello" }, "absolute"},
		{"one destination twice", func(s *Spec) { s.Files = append(s.Files, s.Files[0]) }, "two files for"},
		{"user by name", func(s *Spec) { s.User = "nonroot" }, "numeric UID:GID"},
		{"platform given twice", func(s *Spec) { s.Platforms = append(s.Platforms, s.Platforms[0]) }, "given twice"},
	}
	// A dynamically linked executable, where the machine has one.
	for _, p := range []string{"/bin/true", "/usr/bin/true"} {
		if f, err := elf.Open(p); err == nil {
			dynamic := false
			for _, prog := range f.Progs {
				dynamic = dynamic || prog.Type == elf.PT_INTERP
			}
			f.Close()
			if dynamic && f.Machine == elfMachines[hostPlatform().Architecture].machine {
				cases = append(cases, struct {
					name   string
					change func(*Spec)
					want   string
				}{"dynamically linked", func(s *Spec) { s.Files[0].Src = p }, "CGO_ENABLED=0"})
				break
			}
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := helloSpec(t)
			c.change(&spec)
			out := filepath.Join(t.TempDir(), "image.tar")
			_, err := Build(spec, out)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a refused build left %s", out)
			}
		})
	}
}

// TestFlags: the command line reads into the Spec Build is given.
func TestFlags(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	spec, out, err := parseFlags([]string{
		"--out", "x.tar", "--tag", "registry.example.com/a/b:v1", "--platform", "linux/amd64,linux/arm64",
		"--binary", "linux/amd64=bin/a=b:c:/b", "--binary", "linux/arm64=bin/arm64/b:/b", "--file", "Corefile:/etc/coredns/Corefile",
		"--entrypoint", `["/b","--flag"]`, "--cmd", "-x", "--user", "65535:65535", "--user-name", "pause",
		"--env", "A=1", "--label", "k=v=w", "--ca-bundle", "/ca.pem",
	}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	amd64, arm64 := v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"}
	want := Spec{
		Platforms: []v1.Platform{amd64, arm64},
		Files: []File{
			{Platform: &amd64, Src: "bin/a=b:c", Dst: "/b", Executable: true},
			{Platform: &arm64, Src: "bin/arm64/b", Dst: "/b", Executable: true},
			{Src: "Corefile", Dst: "/etc/coredns/Corefile"},
		},
		Entrypoint: []string{"/b", "--flag"},
		Cmd:        []string{"-x"},
		User:       "65535:65535",
		UserName:   "pause",
		Env:        []string{"A=1"},
		CABundle:   "/ca.pem",
		Labels:     map[string]string{"k": "v=w"},
		Tag:        "registry.example.com/a/b:v1",
		Created:    time.Unix(1700000000, 0).UTC(),
	}
	if out != "x.tar" || !reflect.DeepEqual(spec, want) {
		t.Errorf("parsed\n %+v\nwant\n %+v", spec, want)
	}
	for _, bad := range [][]string{
		{"--tag", "x:v1"},
		{"--out", "x.tar", "--platform", "windows/amd64"},
		{"--out", "x.tar", "--binary", "no-destination"},
		{"--out", "x.tar", "--label", "novalue"},
		{"--out", "x.tar", "--source-date-epoch", "yesterday"},
	} {
		if _, _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// TestNormalizedName: containerd's (and the CRI's) spelling of a tag.
func TestNormalizedName(t *testing.T) {
	for in, want := range map[string]string{
		"meterr-operator:dev":                         "docker.io/library/meterr-operator:dev",
		"meterr/meterr-operator:v1":                   "docker.io/meterr/meterr-operator:v1",
		"docker.io/library/x:1":                       "docker.io/library/x:1",
		"registry.example.com/meterr/operator:v0.1.0": "registry.example.com/meterr/operator:v0.1.0",
		"localhost:5000/x:y":                          "localhost:5000/x:y",
	} {
		if got, err := normalizedName(in); err != nil || got != want {
			t.Errorf("normalizedName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := normalizedName("localhost:5000/x"); err == nil {
		t.Error("a registry port taken for a tag")
	}
}
