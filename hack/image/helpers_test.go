package main

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// The tests' binary: a static Go program for this machine, built once.
var hello struct {
	once sync.Once
	path string
	err  error
}

const helloOutput = "hello from the image"

func helloBinary(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the image's binary is a linux one; this machine runs", runtime.GOOS)
	}
	hello.once.Do(func() {
		dir, err := os.MkdirTemp("", "mkimage-hello")
		if err != nil {
			hello.err = err
			return
		}
		src := filepath.Join(dir, "main.go")
		if err := os.WriteFile(src, []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\""+helloOutput+"\\n\") }\n"), 0o600); err != nil {
			hello.err = err
			return
		}
		hello.path = filepath.Join(dir, "hello")
		cmd := exec.Command("go", "build", "-trimpath", "-o", hello.path, src)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			hello.err = errors.New(string(out))
		}
	})
	if hello.err != nil {
		t.Fatalf("building the test binary: %v", hello.err)
	}
	return hello.path
}

// hostPlatform is the platform helloBinary is for.
func hostPlatform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

// fakeELF writes the smallest static ELF executable header for machine:
// enough for the architecture check, not to run.
func fakeELF(t *testing.T, machine elf.Machine) string {
	t.Helper()
	h := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Ehsize:    64,
		Phentsize: 56,
		Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, h); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fake-"+strings.ToLower(machine.String()))
	if err := os.WriteFile(p, buf.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// testCABundle writes a PEM bundle of one self-signed certificate.
func testCABundle(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mkimage test CA"},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// helloSpec is an image of the test binary, as make image builds the
// operator's.
func helloSpec(t *testing.T) Spec {
	return Spec{
		Platforms:  []v1.Platform{hostPlatform()},
		Files:      []File{{Src: helloBinary(t), Dst: "/hello", Executable: true}},
		Entrypoint: []string{"/hello"},
		User:       DefaultUser,
		UserName:   DefaultUserName,
		CABundle:   testCABundle(t),
		Labels:     map[string]string{"org.opencontainers.image.title": "hello", "org.opencontainers.image.version": "v1"},
		Tag:        "hello:v1",
		Created:    time.Unix(1700000000, 0).UTC(),
	}
}

func build(t *testing.T, spec Spec) (string, Summary) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.tar")
	sum, err := Build(spec, out)
	if err != nil {
		t.Fatal(err)
	}
	return out, sum
}

// untar extracts a tarball of regular files and directories (the archive
// itself) into a new directory.
func untar(t *testing.T, archive string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("%s: outside the archive", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		default:
			t.Fatalf("%s: unexpected type %c in the archive", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// openLayout reads the archive as an OCI image layout, as skopeo's
// oci-archive: and `crane push DIR` do.
func openLayout(t *testing.T, archive string) v1.ImageIndex {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(untar(t, archive))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// onlyImage is the one image index.json names.
func onlyImage(t *testing.T, idx v1.ImageIndex) (v1.Image, v1.Descriptor) {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("index.json names %d manifests, want 1", len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img, m.Manifests[0]
}

// fsEntry is a file of an image's flattened filesystem.
type fsEntry struct {
	hdr  *tar.Header
	body []byte
}

// flatten reads an image's filesystem, every layer applied.
func flatten(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]fsEntry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = fsEntry{h, body}
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(b)
}

// runExtracted writes a binary taken from an image to a file and runs it.
func runExtracted(t *testing.T, body []byte, args ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "extracted")
	if err := os.WriteFile(p, body, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", p, args, err, out)
	}
	return string(out)
}
