package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// imageBinaries are the image's binaries, as `make image` packs them (the
// Makefile's BINARIES at the image's root); the first is the entrypoint.
var imageBinaries = []string{"/meterr-operator", "/meterr-auth-server"}

// What TestMakeImage builds: the release's kind of tag, and stamps it can
// look for.
const (
	testVersion = "v0.0.0-imagetest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
	testImage   = "registry.example.com/meterr/meterr-operator:" + testVersion
)

// TestMakeImage runs `make image` twice, each time into a fresh LOCALBIN
// (so make build links the binary anew), and checks that the two archives
// are the same bytes, that the image is the one the README promises (user,
// entrypoint, labels, CA bundle, /tmp, no shell), that its binary is the
// very file `make build` wrote and runs, and that the Dockerfile describes
// the same image.
func TestMakeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the operator twice")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var archives, binaries []string
	for range 2 {
		dir := t.TempDir()
		archive := filepath.Join(dir, "image.tar")
		start := time.Now()
		makeImage(t, root, "LOCALBIN="+dir, "IMAGE_ARCHIVE="+archive, "IMG="+testImage,
			"VERSION="+testVersion, "COMMIT="+testCommit)
		t.Logf("make image: %s", time.Since(start).Round(time.Second))
		archives, binaries = append(archives, archive), append(binaries, filepath.Join(dir, "meterr-operator"))
	}
	if a, b := fileSHA256(t, archives[0]), fileSHA256(t, archives[1]); a != b {
		t.Errorf("two builds of one commit differ: sha256 %s and %s", a, b)
	}

	img, desc := onlyImage(t, openLayout(t, archives[0]))
	if got := desc.Annotations["io.containerd.image.name"]; got != testImage {
		t.Errorf("named %q, want %q", got, testImage)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/meterr-operator"}) {
		t.Errorf("user %q, entrypoint %q; want 65532:65532 and /meterr-operator", cfg.Config.User, cfg.Config.Entrypoint)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":       "meterr-operator",
		"org.opencontainers.image.description": "Declarative meterr API keys for Kubernetes: operator and auth server",
		"org.opencontainers.image.source":      "https://github.com/meterr/meterr-operator",
		"org.opencontainers.image.version":     testVersion,
		"org.opencontainers.image.revision":    testCommit,
	}
	if !reflect.DeepEqual(cfg.Config.Labels, wantLabels) {
		t.Errorf("labels %v, want %v", cfg.Config.Labels, wantLabels)
	}
	// The commit's time, when this is a checkout (and SOURCE_DATE_EPOCH
	// does not say otherwise).
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%ct").Output(); err == nil && epoch == "" {
		epoch = strings.TrimSpace(string(out))
	}
	if secs, err := strconv.ParseInt(epoch, 10, 64); err == nil && !cfg.Created.Equal(time.Unix(secs, 0)) {
		t.Errorf("created %v, want the commit's time %v", cfg.Created.Time, time.Unix(secs, 0).UTC())
	}

	files := flatten(t, img)
	for _, path := range imageBinaries {
		bin := files[path]
		if bin.hdr == nil || bin.hdr.FileInfo().Mode() != 0o755 || bin.hdr.Uid != 0 {
			t.Fatalf("%s missing, or not 0755 root's", path)
		}
		built := filepath.Join(filepath.Dir(binaries[0]), filepath.Base(path))
		if got, want := sha256Hex(bin.body), fileSHA256(t, built); got != want {
			t.Errorf("the image's %s is sha256 %s, make build's %s", path, got, want)
		}
		if bytes.Contains(bin.body, []byte(root)) {
			t.Errorf("%s holds the checkout's path %s (built without -trimpath?)", path, root)
		}
		if f, err := elf.NewFile(bytes.NewReader(bin.body)); err != nil {
			t.Error(err)
		} else {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked", path)
				}
			}
		}
		if out := runExtracted(t, bin.body, "version"); !strings.Contains(out, testVersion) || !strings.Contains(out, testCommit) {
			t.Errorf("`%s version` from the image says %q", path, out)
		}
	}
	caBundle := os.Getenv("CA_BUNDLE") // as make reads it
	if caBundle == "" {
		caBundle = "/etc/ssl/certs/ca-certificates.crt"
	}
	if ca, err := os.ReadFile(caBundle); err != nil || !bytes.Equal(files[CABundlePath].body, ca) {
		t.Errorf("the image's CA bundle is not the build machine's (%v)", err)
	}
	if tmp := files["/tmp"]; tmp.hdr == nil || tmp.hdr.FileInfo().Mode() != os.ModeDir|os.ModeSticky|0o777 {
		t.Error("/tmp missing or not 1777")
	}
	if _, ok := files["/bin/sh"]; ok {
		t.Error("/bin/sh is in the image")
	}

	t.Run("the Dockerfile agrees", func(t *testing.T) {
		for _, p := range dockerfileProblems(t, filepath.Join(root, "Dockerfile"), cfg.Config) {
			t.Error(p)
		}
	})
}

// makeImage runs `make image` in root with the given variables.
func makeImage(t *testing.T, root string, vars ...string) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-C", root, "--no-print-directory", "image"}, vars...)...)
	// Not a sub-make of whatever make runs these tests: its flags and
	// jobserver are not ours.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" && k != "MAKEOVERRIDES" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
}

// dockerfileProblems: how the Dockerfile differs from the image `make
// image` built (its config is want). Its final stage must be distroless
// static:nonroot (whose facts mkimage's base layer writes) with the binary,
// user, entrypoint and labels of that image, and its builder must build
// the binary with `make build`, so the build flags are the Makefile's.
func dockerfileProblems(t *testing.T, path string, want v1.Config) []string {
	t.Helper()
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	stages, err := parseDockerfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) != 2 {
		return []string{fmt.Sprintf("%d stages, want a builder and the image", len(stages))}
	}
	builder, final := stages[0], stages[1]

	var makeBuild bool
	for _, run := range builder.all("RUN") {
		if regexp.MustCompile(`\bgo build\b`).MatchString(run) {
			fail("the builder runs go build itself (%q): run `make build`, so the flags are the Makefile's GO_BUILD", run)
		}
		if strings.Contains(run, "make build") {
			makeBuild = true
			for _, v := range []string{`VERSION="${VERSION}"`, `COMMIT="${COMMIT}"`} {
				if !strings.Contains(run, v) {
					fail("make build without %s: %q", v, run)
				}
			}
		}
	}
	if !makeBuild {
		fail("the builder does not run make build")
	}

	// distroless static:nonroot: the base mkimage's base layer mirrors.
	if final.from != "gcr.io/distroless/static:nonroot" {
		fail("the image is FROM %s; mkimage's base layer copies distroless static:nonroot's facts, so change both", final.from)
	}
	if DefaultUser != "65532:65532" || DefaultUserName != "nonroot" || CABundlePath != "/etc/ssl/certs/ca-certificates.crt" ||
		want.WorkingDir != "/home/nonroot" || !reflect.DeepEqual(want.Env, []string{DefaultPath, "SSL_CERT_FILE=" + CABundlePath}) {
		fail("mkimage's base facts (user %s %s, workdir %s, env %v) are not distroless static:nonroot's", DefaultUser, DefaultUserName, want.WorkingDir, want.Env)
	}
	for _, k := range []string{"WORKDIR", "ENV", "CMD"} {
		if v := final.all(k); len(v) > 0 {
			fail("the final stage sets %s %v, which make image does not", k, v)
		}
	}
	if len(want.Cmd) > 0 {
		fail("make image sets CMD %q, the Dockerfile does not", want.Cmd)
	}
	if users := final.all("USER"); len(users) != 1 || users[0] != want.User {
		fail("USER %v, make image's %q", users, want.User)
	}
	var entrypoint []string
	if e := final.all("ENTRYPOINT"); len(e) != 1 || json.Unmarshal([]byte(e[0]), &entrypoint) != nil || !reflect.DeepEqual(entrypoint, want.Entrypoint) {
		fail("ENTRYPOINT %v, make image's %q", e, want.Entrypoint)
	}
	// The builder's binaries, each from make build's output to the path
	// make image packs it at; the entrypoint among them.
	var copied []string
	for _, c := range final.all("COPY") {
		f := strings.Fields(c)
		if len(f) != 3 || f[0] != "--from=builder" || f[1] != "/out"+f[2] {
			fail("COPY %s: want a binary of the builder's make build output, /out/NAME to /NAME", c)
			continue
		}
		copied = append(copied, f[2])
	}
	if !slices.Equal(copied, imageBinaries) {
		fail("COPY %v: want the builder's binaries %v", copied, imageBinaries)
	}
	if len(want.Entrypoint) == 0 || !slices.Contains(copied, want.Entrypoint[0]) {
		fail("the entrypoint %q is not a binary the Dockerfile copies", want.Entrypoint)
	}

	// The labels, with the build arguments `make docker-build` passes set
	// to the VERSION and COMMIT make image was given.
	args := map[string]string{"VERSION": testVersion, "COMMIT": testCommit}
	labels := map[string]string{}
	for _, l := range final.all("LABEL") {
		words, err := shellWords(l)
		if err != nil {
			fail("LABEL %s: %v", l, err)
		}
		for _, word := range words {
			k, v, ok := strings.Cut(word, "=")
			if !ok {
				fail("LABEL %q: not KEY=VALUE", word)
			}
			labels[k] = os.Expand(v, func(name string) string { return args[name] })
		}
	}
	if !reflect.DeepEqual(labels, want.Labels) {
		fail("the Dockerfile's labels\n %v\nmake image's\n %v", labels, want.Labels)
	}
	for name := range args {
		if !slices.ContainsFunc(final.all("ARG"), func(a string) bool { return strings.HasPrefix(a, name+"=") || a == name }) {
			fail("the final stage has no ARG %s for its label", name)
		}
	}
	return problems
}

// stage is one FROM of a Dockerfile and its instructions.
type stage struct {
	from, name string
	ins        [][2]string // keyword, arguments
}

func (s stage) all(keyword string) []string {
	var out []string
	for _, in := range s.ins {
		if in[0] == keyword {
			out = append(out, in[1])
		}
	}
	return out
}

// parseDockerfile reads instructions, joining continued lines and dropping
// comments, as docker does.
func parseDockerfile(path string) ([]stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		stages  []stage
		pending string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		keyword, args, _ := strings.Cut(line, " ")
		keyword, args = strings.ToUpper(keyword), strings.Join(strings.Fields(args), " ")
		if keyword == "FROM" {
			var s stage
			words := strings.Fields(args)
			for i := 0; i < len(words); i++ {
				switch {
				case strings.HasPrefix(words[i], "--"):
				case strings.EqualFold(words[i], "AS") && i+1 < len(words):
					s.name = words[i+1]
					i++
				default:
					s.from = words[i]
				}
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if keyword == "ARG" {
				continue
			}
			return nil, fmt.Errorf("%s: %s before FROM", path, keyword)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, [2]string{keyword, args})
	}
	return stages, sc.Err()
}

// shellWords splits s as the Dockerfile's LABEL does: on blanks outside
// double quotes, which it removes.
func shellWords(s string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		quoted bool
		inWord bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quoted && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case (c == ' ' || c == '\t') && !quoted:
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, errors.New("unbalanced quotes")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
