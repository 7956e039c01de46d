package main

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// skopeo reads the archive with containers/image, an implementation of its
// own: what `skopeo copy oci-archive:dist/...tar docker://...` and
// docker-archive: see. Debian's skopeo package; hack/test.sh installs it and
// sets MTR_REQUIRE_SKOPEO=1, so `make test` fails rather than skips.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		if os.Getenv("MTR_REQUIRE_SKOPEO") != "" {
			t.Fatal("skopeo is not installed (Debian: apt-get install skopeo)")
		}
		t.Skip("skopeo is not installed")
	}
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		msg := err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = string(ee.Stderr)
		}
		t.Fatalf("skopeo %s: %s", strings.Join(args, " "), msg)
	}
	return string(out)
}

// TestSkopeo: skopeo's oci-archive: finds the very manifest index.json
// names (so a copy to a registry keeps its digest), and its
// docker-archive: the same config.
func TestSkopeo(t *testing.T) {
	path, _ := build(t, helloSpec(t))
	img, _ := onlyImage(t, openLayout(t, path))
	raw, _ := img.RawManifest()
	cfg, _ := img.RawConfigFile()
	if got := skopeo(t, "inspect", "--raw", "oci-archive:"+path); got != string(raw) {
		t.Errorf("oci-archive: manifest\n %s\nwant\n %s", got, raw)
	}
	if got := skopeo(t, "inspect", "--config", "--raw", "docker-archive:"+path); got != string(cfg) {
		t.Errorf("docker-archive: config\n %s\nwant\n %s", got, cfg)
	}
}

// TestSkopeoMultiPlatform: oci-archive: of a multi-platform archive is the
// index, so `skopeo copy --all` pushes every platform.
func TestSkopeoMultiPlatform(t *testing.T) {
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
	raw, _ := idx.RawManifest()
	if got := skopeo(t, "inspect", "--raw", "oci-archive:"+path); got != string(raw) {
		t.Errorf("oci-archive: gives\n %s\nwant the index\n %s", got, raw)
	}
}
