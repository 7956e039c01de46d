package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	ctrarchive "github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The importer below is the one `ctr images import` runs (and with it
// `kind load image-archive`, which pipes the archive to
// `ctr --namespace=k8s.io images import`): containerd's
// core/images/archive.ImportIndex, into a content store on disk.

// importArchive imports a tarball the way containerd does and returns the
// store and the index it made.
func importArchive(t *testing.T, r io.Reader) (content.Store, ocispec.Index) {
	t.Helper()
	ctx := context.Background()
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	desc, err := ctrarchive.ImportIndex(ctx, store, r)
	if err != nil {
		t.Fatalf("containerd's ImportIndex: %v", err)
	}
	b, err := content.ReadBlob(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return store, idx
}

// checkImported: the one image the index names is called name (what the
// kubelet asks the CRI for), every blob it refers to was imported, and the
// manifest for platform p has config configDigest.
func checkImported(t *testing.T, store content.Store, idx ocispec.Index, name string, p v1.Platform, configDigest v1.Hash) {
	t.Helper()
	ctx := context.Background()
	if len(idx.Manifests) != 1 {
		t.Fatalf("%d images imported, want 1", len(idx.Manifests))
	}
	top := idx.Manifests[0]
	if got := top.Annotations[images.AnnotationImageName]; got != name {
		t.Errorf("imported as %q, want %q", got, name)
	}
	if err := images.Walk(ctx, images.ChildrenHandler(store), top); err != nil {
		t.Errorf("walking the imported image: %v", err)
	}
	m, err := images.Manifest(ctx, store, top, platforms.Only(ocispec.Platform{OS: p.OS, Architecture: p.Architecture}))
	if err != nil {
		t.Fatalf("the manifest for %s: %v", p, err)
	}
	if m.Config.Digest.String() != configDigest.String() {
		t.Errorf("%s: config %s, want %s", p, m.Config.Digest, configDigest)
	}
}

// TestContainerdImportsOCILayout: containerd reads the archive as an OCI
// layout (oci-layout is there) and names the image by
// io.containerd.image.name.
func TestContainerdImportsOCILayout(t *testing.T) {
	spec := helloSpec(t)
	path, _ := build(t, spec)
	img, _ := onlyImage(t, openLayout(t, path))
	cfg, _ := img.ConfigName()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	store, idx := importArchive(t, f)
	checkImported(t, store, idx, "docker.io/library/hello:v1", hostPlatform(), cfg)
}

// TestContainerdImportsDockerArchive: without oci-layout containerd falls
// back to manifest.json (a docker-archive), and finds the same image there.
func TestContainerdImportsDockerArchive(t *testing.T) {
	path, _ := build(t, helloSpec(t))
	img, _ := onlyImage(t, openLayout(t, path))
	cfg, _ := img.ConfigName()
	store, idx := importArchive(t, bytes.NewReader(without(t, path, "oci-layout", "index.json")))
	checkImported(t, store, idx, "docker.io/library/hello:v1", hostPlatform(), cfg)
	m, err := images.Manifest(context.Background(), store, idx.Manifests[0], platforms.All)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.MediaType != images.MediaTypeDockerSchema2LayerGzip {
			t.Errorf("layer %s imported as %s, want gzip", l.Digest, l.MediaType)
		}
	}
}

// TestContainerdImportsMultiPlatform: one name for the index; each
// platform's manifest found under it.
func TestContainerdImportsMultiPlatform(t *testing.T) {
	amd64, arm64 := v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"}
	spec := helloSpec(t)
	spec.Platforms = []v1.Platform{amd64, arm64}
	spec.Files = []File{
		{Platform: &amd64, Src: fakeELF(t, elf.EM_X86_64), Dst: "/hello", Executable: true},
		{Platform: &arm64, Src: fakeELF(t, elf.EM_AARCH64), Dst: "/hello", Executable: true},
	}
	path, sum := build(t, spec)
	idx, err := openLayout(t, path).ImageIndex(sum.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	store, imported := importArchive(t, f)
	for i, p := range spec.Platforms {
		img, err := idx.Image(im.Manifests[i].Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigName()
		checkImported(t, store, imported, "docker.io/library/hello:v1", p, cfg)
	}
	got, err := images.Platforms(context.Background(), store, imported.Manifests[0])
	if err != nil || len(got) != 2 {
		t.Errorf("platforms %v (%v), want amd64 and arm64", got, err)
	}
}

// without copies a tarball leaving out some members.
func without(t *testing.T, path string, names ...string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	skip := map[string]bool{}
	for _, n := range names {
		skip[n] = true
	}
	var buf bytes.Buffer
	tr, tw := tar.NewReader(f), tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if skip[h.Name] {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
