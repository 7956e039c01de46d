package cmd

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/revocation"
)

// Exit codes of `meterr-operator revoke`.
const (
	// RevokeExitDone: every key was revoked (or had been already).
	RevokeExitDone = 0
	// RevokeExitError: bad flags, the cluster unreadable, a request not acted on in time.
	RevokeExitError = 1
	// RevokeExitUnknown: at least one line is not a key of this cluster.
	RevokeExitUnknown = 3

	// maxRevokeLines bounds one run's input.
	maxRevokeLines = 1000
	// requestGoneGrace is how long after its request is removed the status
	// may take to list a revoked key.
	requestGoneGrace = 3 * time.Second
)

// RevokeOptions are the flags of `meterr-operator revoke`.
type RevokeOptions struct {
	Namespaces []string
	Source     string
	Location   string
	Timeout    time.Duration
}

// RevokeUsage heads `meterr-operator revoke --help`.
const RevokeUsage = `Usage:
  meterr-operator revoke [flags] < keys     revoke leaked keys, one per line on standard input

For each key: finds the MeterrAPIKey that owns it (by the key's id, in every namespace your
kubeconfig may list MeterrAPIKeys in, or in --namespace), files a revocation request with it
(an annotation holding the key's SHA-256, never the key), and waits until the operator has
acted: the key version is refused by every auth server (invalid_api_key) and never accepted
again; a revoked current key is replaced at once in the workload Secret, without touching
the resource's spec. Revoking a key already revoked changes nothing (and exits 0).

Prints the owner, the key id, which version it was and what replaces it; never the key.
A line that is not a key of a MeterrAPIKey you can see prints "not a key of this cluster".

Needs: list and patch on meterrapikeys (auth.meterr.ai) in the owner's namespace.

Exit status: 0 every key revoked (or already revoked), 1 an error, 3 a line is not a key
of this cluster.

Flags:
`

// AddFlags registers the revoke flags on fs.
func (o *RevokeOptions) AddFlags(fs *flag.FlagSet) {
	fs.Func("namespace", "Look for owners only in these namespaces (comma-separated; repeatable). Default: every namespace, or the kubeconfig's namespace when you may not list cluster-wide.", func(s string) error {
		for n := range strings.SplitSeq(s, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.Namespaces = append(o.Namespaces, n)
			}
		}
		return nil
	})
	fs.StringVar(&o.Source, "source", "cli", "Who reports the leak, shown to the owner (Event, status.compromisedKeys).")
	fs.StringVar(&o.Location, "location", "", "Where the key was found (a URL, a file path), shown to the owner in the Event.")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "How long to wait for the operator to act on each request.")
	fs.Usage = func() {
		_, _ = fmt.Fprint(fs.Output(), RevokeUsage)
		fs.PrintDefaults()
	}
}

// RunRevoke runs `meterr-operator revoke`.
func RunRevoke(ctx context.Context, restConfig func() (*rest.Config, error), o RevokeOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	if o.Timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	cfg, err := restConfig()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: authv1alpha1.Scheme})
	if err != nil {
		return err
	}
	if len(o.Namespaces) == 0 {
		o.Namespaces = []string{""}
	}
	return revoke(ctx, c, o, defaultNamespace, stdin, stdout, stderr)
}

// defaultNamespace is the kubeconfig's namespace, for a caller who may not
// list MeterrAPIKeys cluster-wide.
func defaultNamespace() string {
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}

// owned is a MeterrAPIKey found to name a key version.
type owned struct {
	mak   *authv1alpha1.MeterrAPIKey
	state revocation.State
}

func revoke(ctx context.Context, c client.Client, o RevokeOptions, fallbackNS func() string, stdin io.Reader, stdout, stderr io.Writer) error {
	keys, bad, err := readKeys(stdin)
	if err != nil {
		return err
	}
	for _, line := range bad {
		_, _ = fmt.Fprintf(stdout, "line %d: not a key of this cluster (not a meterr API key: mtr_live_ or mtr_test_ and 46 base62 characters with a valid checksum)\n", line)
	}
	if len(keys) == 0 && len(bad) == 0 {
		return errors.New("no key on standard input; pipe keys in, one per line")
	}
	maks, err := listKeys(ctx, c, o.Namespaces, fallbackNS, stderr)
	if err != nil {
		return err
	}
	unknown, failed := len(bad), 0
	for _, k := range keys {
		h := apikey.HashOf(k.key)
		id := h.ID()
		found := findOwner(maks, id)
		if found == nil {
			_, _ = fmt.Fprintf(stdout, "line %d: key %s: not a key of this cluster\n", k.line, id)
			unknown++
			continue
		}
		mak := found.mak
		owner := mak.Namespace + "/" + mak.Name
		if found.state == revocation.Compromised {
			_, _ = fmt.Fprintf(stdout, "line %d: key %s of MeterrAPIKey %s: already revoked%s; current key: %s\n",
				k.line, id, owner, reportedAt(mak, id), currentOf(mak))
			continue
		}
		if err := revocation.Submit(ctx, c, client.ObjectKeyFromObject(mak), h, o.Source, o.Location); err != nil {
			_, _ = fmt.Fprintf(stdout, "line %d: key %s of MeterrAPIKey %s: %v\n", k.line, id, owner, err)
			failed++
			continue
		}
		after, err := awaitRevocation(ctx, c, mak, id, o.Timeout)
		switch {
		case err != nil:
			_, _ = fmt.Fprintf(stdout, "line %d: key %s of MeterrAPIKey %s: the request is filed but %v\n", k.line, id, owner, err)
			failed++
		case after == nil:
			// The operator found no version with this hash: an id
			// shared by chance with another key.
			_, _ = fmt.Fprintf(stdout, "line %d: key %s: not a key of this cluster\n", k.line, id)
			unknown++
		case found.state == revocation.Current:
			_, _ = fmt.Fprintf(stdout, "line %d: key %s of MeterrAPIKey %s (the current key): revoked; replaced by key %s in Secret %s/%s\n",
				k.line, id, owner, currentOf(after), after.Namespace, after.Status.SecretName)
		default:
			_, _ = fmt.Fprintf(stdout, "line %d: key %s of MeterrAPIKey %s (a previous key, in its overlap): revoked; the current key %s stays valid\n",
				k.line, id, owner, currentOf(after))
		}
	}
	switch {
	case failed > 0:
		return &ExitError{Code: RevokeExitError, Msg: fmt.Sprintf("%d key(s) not revoked", failed)}
	case unknown > 0:
		return &ExitError{Code: RevokeExitUnknown, Msg: fmt.Sprintf("%d line(s) not a key of this cluster", unknown)}
	}
	return nil
}

type inputKey struct {
	line int
	key  string
}

// readKeys reads one key per line; blank lines are skipped, malformed ones
// are returned by line number only (a mistyped key is still a secret).
func readKeys(stdin io.Reader) ([]inputKey, []int, error) {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 4096), 4096)
	var keys []inputKey
	var bad []int
	line := 0
	for sc.Scan() {
		line++
		if line > maxRevokeLines {
			return nil, nil, fmt.Errorf("more than %d lines on standard input", maxRevokeLines)
		}
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		if apikey.Parse(s) != nil {
			bad = append(bad, line)
			continue
		}
		if !slices.ContainsFunc(keys, func(k inputKey) bool { return k.key == s }) {
			keys = append(keys, inputKey{line: line, key: s})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading standard input (line %d): %w", line+1, err)
	}
	return keys, bad, nil
}

// listKeys lists the MeterrAPIKeys of the namespaces ("" = all). When the
// caller may not list cluster-wide, it falls back to the kubeconfig's namespace.
func listKeys(ctx context.Context, c client.Reader, namespaces []string, fallbackNS func() string, stderr io.Writer) ([]authv1alpha1.MeterrAPIKey, error) {
	var out []authv1alpha1.MeterrAPIKey
	for _, ns := range namespaces {
		list := &authv1alpha1.MeterrAPIKeyList{}
		err := c.List(ctx, list, client.InNamespace(ns))
		if ns == "" && apierrors.IsForbidden(err) {
			ns = fallbackNS()
			_, _ = fmt.Fprintf(stderr, "you may not list MeterrAPIKeys in every namespace; looking in %s (use --namespace)\n", ns)
			err = c.List(ctx, list, client.InNamespace(ns))
		}
		if err != nil {
			return nil, fmt.Errorf("listing MeterrAPIKeys%s: %w", inNamespace(ns), err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

func inNamespace(ns string) string {
	if ns == "" {
		return ""
	}
	return " in " + ns
}

func findOwner(maks []authv1alpha1.MeterrAPIKey, id string) *owned {
	for i := range maks {
		if s := revocation.StateOf(&maks[i], id); s != revocation.Unknown {
			return &owned{mak: &maks[i], state: s}
		}
	}
	return nil
}

// awaitRevocation waits until the operator has acted on the request for id:
// it returns the MeterrAPIKey listing id as compromised, or nil when the
// request was removed without that (the hash matched no version).
func awaitRevocation(ctx context.Context, c client.Reader, mak *authv1alpha1.MeterrAPIKey, id string, timeout time.Duration) (*authv1alpha1.MeterrAPIKey, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	annotation := authv1alpha1.AnnotationRevokePrefix + id
	var goneAt time.Time
	for {
		cur := &authv1alpha1.MeterrAPIKey{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(mak), cur); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("the operator did not act on it within %s (is the manager running?)", timeout)
			}
			return nil, fmt.Errorf("reading MeterrAPIKey %s/%s: %w", mak.Namespace, mak.Name, err)
		}
		if revocation.StateOf(cur, id) == revocation.Compromised &&
			(revocation.StateOf(mak, id) != revocation.Current || (cur.Status.CurrentKey != nil && cur.Status.CurrentKey.ID != id)) {
			return cur, nil
		}
		// The operator removes the request before it writes the status:
		// a request gone and a status that never lists the key, for a
		// while, means the hash matched no version.
		if _, pending := cur.Annotations[annotation]; !pending {
			if goneAt.IsZero() {
				goneAt = time.Now()
			} else if time.Since(goneAt) > requestGoneGrace {
				return nil, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the operator did not act on it within %s (is the manager running?)", timeout)
		case <-tick.C:
		}
	}
}

func currentOf(mak *authv1alpha1.MeterrAPIKey) string {
	if c := mak.Status.CurrentKey; c != nil {
		return c.ID
	}
	return "none yet"
}

func reportedAt(mak *authv1alpha1.MeterrAPIKey, id string) string {
	for _, c := range mak.Status.CompromisedKeys {
		if c.ID == id {
			return fmt.Sprintf(" at %s (reported by %s)", c.ReportedAt.UTC().Format(time.RFC3339), c.Source)
		}
	}
	return ""
}
