package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// archive is the tarball: an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) with a `docker save` manifest.json beside it that names
// the same blobs, as `docker save` writes since Docker 25. Readers of either
// kind find what they look for and ignore the rest:
//
//   - containerd (`ctr images import`, which `kind load image-archive` runs)
//     reads the OCI layout when oci-layout is there, and names the image by
//     index.json's io.containerd.image.name;
//   - skopeo's oci-archive: reads the layout (the one manifest in
//     index.json), its docker-archive: reads manifest.json;
//   - crane push of a tarball and docker load before Docker 25 read
//     manifest.json.
type archive struct {
	created time.Time
	tag     string
	blobs   map[v1.Hash][]byte
	index   []v1.Descriptor // index.json's manifests
	docker  []dockerManifest
}

// dockerManifest is one entry of manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (a *archive) addBlob(h v1.Hash, b []byte) {
	if a.blobs == nil {
		a.blobs = map[v1.Hash][]byte{}
	}
	a.blobs[h] = b
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// annotations name the image for the layout's readers: containerd's full
// name, and the OCI ref name (the same full name, which crane and skopeo
// accept too).
func (a *archive) annotations() map[string]string {
	if a.tag == "" {
		return nil
	}
	full, _ := normalizedName(a.tag)
	return map[string]string{
		AnnotationImageName:                 full,
		"org.opencontainers.image.ref.name": full,
	}
}

// addImageBlobs stores an image's manifest, config and layers, and its
// manifest.json entry (tagged or not).
func (a *archive) addImageBlobs(img v1.Image, tagged bool) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	a.addBlob(digest, raw)
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	a.addBlob(cfgName, cfg)
	entry := dockerManifest{Config: blobPath(cfgName)}
	if tagged && a.tag != "" {
		entry.RepoTags = []string{a.tag}
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		a.addBlob(h, b)
		entry.Layers = append(entry.Layers, blobPath(h))
	}
	a.docker = append(a.docker, entry)
	return nil
}

// addImage makes img the archive's one image.
func (a *archive) addImage(img v1.Image, p *v1.Platform) error {
	if err := a.addImageBlobs(img, true); err != nil {
		return err
	}
	raw, _ := img.RawManifest()
	digest, _ := img.Digest()
	a.index = append(a.index, v1.Descriptor{
		MediaType:   types.OCIManifestSchema1,
		Size:        int64(len(raw)),
		Digest:      digest,
		Platform:    p,
		Annotations: a.annotations(),
	})
	return nil
}

// addIndex makes idx (the images of several platforms) the archive's one
// entry. manifest.json, which knows no index, lists every platform's image
// and tags only the first: docker load keeps one image per tag, and crane
// push of a tarball refuses more than one, rather than push one platform
// for the lot (push the layout instead: see the README).
func (a *archive) addIndex(idx v1.ImageIndex, images []v1.Image, platforms []v1.Platform) error {
	for i, img := range images {
		if err := a.addImageBlobs(img, i == 0); err != nil {
			return fmt.Errorf("%s: %w", platforms[i], err)
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	a.addBlob(digest, raw)
	a.index = append(a.index, v1.Descriptor{
		MediaType:   types.OCIImageIndex,
		Size:        int64(len(raw)),
		Digest:      digest,
		Annotations: a.annotations(),
	})
	return nil
}

// write writes the tarball (through a temporary file, so a failed build
// leaves no half-written archive) and returns its size.
func (a *archive) write(out string) (int64, error) {
	indexJSON, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: a.index})
	if err != nil {
		return 0, err
	}
	manifestJSON, err := json.Marshal(a.docker)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".*.tmp")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()

	tw := tar.NewWriter(f)
	put := func(name string, body []byte) error {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: a.created, Typeflag: tar.TypeReg}
		if body == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	hashes := make([]v1.Hash, 0, len(a.blobs))
	for h := range a.blobs {
		hashes = append(hashes, h)
	}
	sort.Slice(hashes, func(i, j int) bool { return hashes[i].String() < hashes[j].String() })
	if err := put("blobs/", nil); err != nil {
		return 0, err
	}
	if err := put("blobs/sha256/", nil); err != nil {
		return 0, err
	}
	for _, h := range hashes {
		if err := put(blobPath(h), a.blobs[h]); err != nil {
			return 0, err
		}
	}
	for _, e := range []struct {
		name string
		body []byte
	}{
		{"index.json", indexJSON},
		{"manifest.json", manifestJSON},
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	} {
		if err := put(e.name, e.body); err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return size, os.Rename(f.Name(), out)
}
