package main

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The base facts of distroless static:nonroot, which the Dockerfile's final
// stage builds on: the same user, home, working directory, CA bundle path
// and environment, so the two images behave alike (a test holds them
// together with the Dockerfile).
const (
	DefaultUser     = "65532:65532"
	DefaultUserName = "nonroot"
	CABundlePath    = "/etc/ssl/certs/ca-certificates.crt"
	DefaultPath     = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// AnnotationImageName is containerd's name for an image in an archive; it
// takes precedence over org.opencontainers.image.ref.name in `ctr images
// import` and must be the fully qualified name the CRI looks images up by
// (docker.io/library/x:tag for x:tag), or the kubelet does not find it.
const AnnotationImageName = "io.containerd.image.name"

// Spec is what an image holds.
type Spec struct {
	Platforms  []v1.Platform
	Files      []File
	Entrypoint []string
	Cmd        []string
	User       string // UID:GID
	UserName   string
	WorkDir    string
	Env        []string
	CABundle   string // a PEM file on this machine, or "" for none
	Labels     map[string]string
	Tag        string
	Created    time.Time
}

// File is one file copied into the image.
type File struct {
	Platform   *v1.Platform // nil: every platform
	Src, Dst   string
	Executable bool // a static ELF binary for the platform, 0755; else 0644
}

// Summary describes what Build wrote.
type Summary struct {
	Digest v1.Hash // of the image manifest, or of the index for several platforms
	Size   int64   // of the tarball
}

func (s Spec) platformStrings() []string {
	var out []string
	for _, p := range s.Platforms {
		out = append(out, p.String())
	}
	return out
}

func parsePlatform(s string) (v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return v1.Platform{}, err
	}
	if p.OS != "linux" || p.Architecture == "" || p.OSVersion != "" {
		return v1.Platform{}, fmt.Errorf("platform %q: want linux/ARCH[/VARIANT]", s)
	}
	if _, ok := elfMachines[p.Architecture]; !ok {
		return v1.Platform{}, fmt.Errorf("platform %q: unknown architecture %s", s, p.Architecture)
	}
	return *p, nil
}

// Build writes the image (or, for several platforms, the index of images)
// described by spec as a tarball at out.
func Build(spec Spec, out string) (Summary, error) {
	if err := spec.validate(); err != nil {
		return Summary{}, err
	}
	uid, gid, _ := parseUser(spec.User)
	var caBundle []byte
	if spec.CABundle != "" {
		var err error
		if caBundle, err = readCABundle(spec.CABundle); err != nil {
			return Summary{}, err
		}
	}
	base, err := newLayer(baseEntries(uid, gid, spec.UserName, caBundle), spec.Created)
	if err != nil {
		return Summary{}, err
	}

	var images []v1.Image
	for _, p := range spec.Platforms {
		entries, err := appEntries(spec.Files, p)
		if err != nil {
			return Summary{}, err
		}
		app, err := newLayer(entries, spec.Created)
		if err != nil {
			return Summary{}, err
		}
		img, err := spec.image(p, base, app)
		if err != nil {
			return Summary{}, err
		}
		images = append(images, img)
	}

	a := archive{created: spec.Created, tag: spec.Tag}
	var top partial.Describable
	if len(images) == 1 {
		top = images[0]
		err = a.addImage(images[0], &spec.Platforms[0])
	} else {
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		var adds []mutate.IndexAddendum
		for i, img := range images {
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &spec.Platforms[i]}})
		}
		idx = mutate.AppendManifests(idx, adds...)
		top = idx
		err = a.addIndex(idx, images, spec.Platforms)
	}
	if err != nil {
		return Summary{}, err
	}
	digest, err := top.Digest()
	if err != nil {
		return Summary{}, err
	}
	size, err := a.write(out)
	if err != nil {
		return Summary{}, err
	}
	return Summary{Digest: digest, Size: size}, nil
}

func (s Spec) validate() error {
	if len(s.Platforms) == 0 {
		return errors.New("no platform")
	}
	for i, p := range s.Platforms {
		if slices.ContainsFunc(s.Platforms[:i], p.Equals) {
			return fmt.Errorf("platform %s given twice", p)
		}
	}
	if _, _, err := parseUser(s.User); err != nil {
		return err
	}
	if !validName(s.UserName) {
		return fmt.Errorf("--user-name %q: want a lower-case name", s.UserName)
	}
	if s.Tag != "" {
		if _, err := normalizedName(s.Tag); err != nil {
			return err
		}
	}
	for _, f := range s.Files {
		if f.Src == "" || !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			return fmt.Errorf("%s:%s: want SRC:DST with DST an absolute, clean file path", f.Src, f.Dst)
		}
		if f.Platform != nil && !slices.ContainsFunc(s.Platforms, f.Platform.Equals) {
			return fmt.Errorf("%s is for %s, which is not among the platforms %s", f.Src, f.Platform, strings.Join(s.platformStrings(), ","))
		}
	}
	for _, p := range s.Platforms {
		seen := map[string]bool{}
		for _, f := range s.Files {
			if f.Platform != nil && !f.Platform.Equals(p) {
				continue
			}
			if seen[f.Dst] {
				return fmt.Errorf("%s: two files for %s", f.Dst, p)
			}
			seen[f.Dst] = true
		}
		// An entrypoint that names a path must be in the image: there is
		// no shell and no PATH lookup to rescue it.
		if len(s.Entrypoint) > 0 && path.IsAbs(s.Entrypoint[0]) && !seen[s.Entrypoint[0]] {
			return fmt.Errorf("the entrypoint %s is not among the files given for %s", s.Entrypoint[0], p)
		}
	}
	return nil
}

// parseUser reads a numeric UID:GID.
func parseUser(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("--user %q: want a numeric UID:GID such as %s", s, DefaultUser)
	}
	return uid, gid, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// normalizedName is the fully qualified form of a tag reference, as
// containerd and the CRI spell it: meterr-operator:v1 is
// docker.io/library/meterr-operator:v1.
func normalizedName(ref string) (string, error) {
	// A reference without a tag would mean :latest; say it instead.
	if last := ref[strings.LastIndex(ref, "/")+1:]; !strings.Contains(last, ":") {
		return "", fmt.Errorf("--tag %q: want REPOSITORY:TAG", ref)
	}
	t, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("--tag %q: %w", ref, err)
	}
	registry := t.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + t.RepositoryStr() + ":" + t.TagStr(), nil
}

// readCABundle reads a PEM bundle and fails unless it holds certificates.
func readCABundle(file string) ([]byte, error) {
	pem, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--ca-bundle %s: no such file; on Debian or Ubuntu install the ca-certificates package (apt-get install ca-certificates), elsewhere point --ca-bundle (make image CA_BUNDLE=...) at the system's PEM bundle", file)
	}
	if err != nil {
		return nil, fmt.Errorf("--ca-bundle: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-bundle %s: no PEM certificate in it", file)
	}
	return pem, nil
}

// image assembles one platform's image from the base and app layers.
func (s Spec) image(p v1.Platform, base, app v1.Layer) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	created := v1.Time{Time: s.Created}
	img, err := mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "mkimage: base (users, /tmp, CA bundle)"}},
		mutate.Addendum{Layer: app, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "mkimage: " + s.filesFor(p)}},
	)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = created
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	uid, _, _ := parseUser(s.User)
	workdir := s.WorkDir
	if workdir == "" {
		workdir = "/"
		if hasOwnHome(uid) {
			workdir = homeOf(s.UserName)
		}
	}
	env := []string{DefaultPath}
	if s.CABundle != "" {
		env = append(env, "SSL_CERT_FILE="+CABundlePath)
	}
	cfg.Config = v1.Config{
		User:       s.User,
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        append(env, s.Env...),
		WorkingDir: workdir,
		Labels:     s.Labels,
	}
	return mutate.ConfigFile(img, cfg)
}

func (s Spec) filesFor(p v1.Platform) string {
	var dsts []string
	for _, f := range s.Files {
		if f.Platform == nil || f.Platform.Equals(p) {
			dsts = append(dsts, f.Dst)
		}
	}
	return strings.Join(dsts, " ")
}

func homeOf(user string) string { return "/home/" + user }

// newLayer makes an OCI layer (gzip) of entries. The compression is done
// here, once, with the standard library, so the bytes depend only on the
// entries and the Go version (and ggcr only hashes them).
func newLayer(entries []entry, mtime time.Time) (v1.Layer, error) {
	gz, err := tarGzip(entries, mtime)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
