// Command mkimage builds a container image from static binaries without a
// container engine, and writes it as one tarball that is both an OCI image
// layout (oci-layout, index.json, blobs/) and a `docker save` archive
// (manifest.json naming the same blobs), so containerd (`ctr images import`,
// `kind load image-archive`), skopeo (oci-archive: and docker-archive:),
// crane and `docker load` all read it.
//
// `make image` builds the operator's image with it; it is general enough for
// other single-binary images (pause, CoreDNS):
//
//	mkimage --out dist/x.tar --tag x:v1 --platform linux/amd64 \
//	  --binary bin/x:/x --entrypoint /x --ca-bundle /etc/ssl/certs/ca-certificates.crt \
//	  --label org.opencontainers.image.version=v1
//
// The image is two layers, like distroless static:nonroot plus an
// application: a base (/etc/passwd and /etc/group with root, nobody and the
// --user, its home, /tmp with mode 1777, the CA bundle) and the files given.
// Every timestamp is SOURCE_DATE_EPOCH (or --source-date-epoch), so the same
// inputs give the same bytes.
//
// It lives in a module of its own (hack/image/go.mod) so that
// go-containerregistry stays out of the operator's go.mod.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	spec, out, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	start := time.Now()
	sum, err := Build(spec, out)
	if err != nil {
		return err
	}
	name := spec.Tag
	if name == "" {
		name = "(untagged)"
	}
	fmt.Fprintf(stdout, "mkimage: wrote %s: %s %s, %s, %.1f MB, in %.1fs\n", out, name,
		strings.Join(spec.platformStrings(), ","), sum.Digest, float64(sum.Size)/1e6, time.Since(start).Seconds())
	return nil
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func parseFlags(args []string, stderr io.Writer) (Spec, string, error) {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		out, entrypoint, cmd, epoch string
		platforms, binaries, files  repeated
		labels, envs                repeated
		spec                        = Spec{User: DefaultUser, UserName: DefaultUserName}
	)
	fs.StringVar(&out, "out", "", "the tarball to write (required)")
	fs.Var(&platforms, "platform", "os/arch[/variant]; repeatable or comma-separated (default linux/amd64); several make a multi-platform index")
	fs.Var(&binaries, "binary", "[PLATFORM=]SRC:DST: a static ELF executable for PLATFORM (or every platform), mode 0755, owned by root; repeatable")
	fs.Var(&files, "file", "[PLATFORM=]SRC:DST: any other file, mode 0644, owned by root; repeatable")
	fs.StringVar(&entrypoint, "entrypoint", "", `the entrypoint: a path, or a JSON array such as '["/x","--flag"]'`)
	fs.StringVar(&cmd, "cmd", "", "the default arguments: one, or a JSON array")
	fs.StringVar(&spec.User, "user", spec.User, "UID:GID the container runs as (numeric); 0:0 for root")
	fs.StringVar(&spec.UserName, "user-name", spec.UserName, "the name /etc/passwd and /etc/group give that UID and GID")
	fs.StringVar(&spec.WorkDir, "workdir", "", "the working directory (default: the user's home, / for root)")
	fs.Var(&envs, "env", "KEY=VALUE, after PATH (and SSL_CERT_FILE with --ca-bundle); repeatable")
	fs.StringVar(&spec.CABundle, "ca-bundle", "", "a PEM CA bundle to install as "+CABundlePath+" (e.g. Debian's ca-certificates)")
	fs.Var(&labels, "label", "KEY=VALUE image label (org.opencontainers.image.*); repeatable")
	fs.StringVar(&spec.Tag, "tag", "", "the image reference (repo:tag) the archive names: index.json's annotations and manifest.json's RepoTags")
	fs.StringVar(&epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "seconds since 1970 for every timestamp (default $SOURCE_DATE_EPOCH, else 0)")
	if err := fs.Parse(args); err != nil {
		return Spec{}, "", err
	}
	if fs.NArg() > 0 {
		return Spec{}, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if out == "" {
		return Spec{}, "", errors.New("--out is required")
	}
	if len(platforms) == 0 {
		platforms = repeated{"linux/amd64"}
	}
	for _, list := range platforms {
		for _, s := range strings.Split(list, ",") {
			p, err := parsePlatform(strings.TrimSpace(s))
			if err != nil {
				return Spec{}, "", err
			}
			spec.Platforms = append(spec.Platforms, p)
		}
	}
	for _, b := range binaries {
		f, err := parseFileFlag(b, true)
		if err != nil {
			return Spec{}, "", fmt.Errorf("--binary %s: %w", b, err)
		}
		spec.Files = append(spec.Files, f)
	}
	for _, b := range files {
		f, err := parseFileFlag(b, false)
		if err != nil {
			return Spec{}, "", fmt.Errorf("--file %s: %w", b, err)
		}
		spec.Files = append(spec.Files, f)
	}
	var err error
	if spec.Entrypoint, err = parseArgv(entrypoint); err != nil {
		return Spec{}, "", fmt.Errorf("--entrypoint: %w", err)
	}
	if spec.Cmd, err = parseArgv(cmd); err != nil {
		return Spec{}, "", fmt.Errorf("--cmd: %w", err)
	}
	spec.Env = envs
	for _, e := range envs {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return Spec{}, "", fmt.Errorf("--env %q: want KEY=VALUE", e)
		}
	}
	spec.Labels = map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return Spec{}, "", fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		spec.Labels[k] = v
	}
	if epoch != "" {
		secs, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil || secs < 0 {
			return Spec{}, "", fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", epoch)
		}
		spec.Created = time.Unix(secs, 0).UTC()
	} else {
		spec.Created = time.Unix(0, 0).UTC()
	}
	return spec, out, nil
}

// parseFileFlag reads [PLATFORM=]SRC:DST.
func parseFileFlag(s string, executable bool) (File, error) {
	f := File{Executable: executable}
	// A PLATFORM= prefix is one that reads as a platform; anything else
	// before a "=" is part of SRC.
	if plat, rest, ok := strings.Cut(s, "="); ok && strings.HasPrefix(plat, "linux/") {
		p, err := parsePlatform(plat)
		if err != nil {
			return File{}, err
		}
		f.Platform, s = &p, rest
	}
	// DST is absolute, so the last ":/" splits SRC from DST even when SRC
	// holds a colon.
	i := strings.LastIndex(s, ":/")
	if i <= 0 {
		return File{}, errors.New("want [PLATFORM=]SRC:DST with DST absolute")
	}
	f.Src, f.Dst = s[:i], s[i+1:]
	return f, nil
}

// parseArgv reads "" (none), a JSON array, or one plain word.
func parseArgv(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(s, "[") {
		var argv []string
		if err := json.Unmarshal([]byte(s), &argv); err != nil {
			return nil, err
		}
		return argv, nil
	}
	return []string{s}, nil
}
