package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/webhookserver"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/index"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// Exit codes of `meterr-operator whois`.
const (
	// WhoisExitFound: the key was found (whatever the decision).
	WhoisExitFound = 0
	// WhoisExitError: bad flags, a malformed key, the cluster unreadable.
	WhoisExitError = 1
	// WhoisExitUnknown: no key record holds the key (or key id).
	WhoisExitUnknown = 3
)

// ExitError is an error that asks main for a particular exit code; an
// empty message prints nothing more.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

// ExitCode returns the process exit code.
func (e *ExitError) ExitCode() int { return e.Code }

// WhoisOptions are the flags of `meterr-operator whois`.
type WhoisOptions struct {
	RecordsNamespace string
	KeyID            string
	Output           string

	// The request whose answer to explain, and the auth server's
	// configuration that shapes it.
	IP             string
	Origin         string
	Method         string
	Path           string
	Environment    string
	Routes         []webhookserver.Route
	TrustedProxies []netip.Prefix
	TrustedHops    int
	ForwardedFor   string
}

// WhoisUsage heads `meterr-operator whois --help`.
const WhoisUsage = `Usage:
  meterr-operator whois [flags] < key          look a key up by the key itself (read from standard input)
  meterr-operator whois --key-id ID [flags]    look a key version up by its id (as in status.currentKey.id)

Prints the key's owner (the MeterrAPIKey), which version it is (current; previous until T;
tombstone since T), the MeterrAPIKey's Ready condition, its limit and restrictions. With
--ip, --origin, --method or --path (and --environment, --route, --trusted-proxies,
--trusted-hops, --forwarded-for to mirror the auth server's flags) it also prints what the auth
server would answer to such a request, and why, as decided by the auth server's own code.

The key records are read with your kubeconfig from --records-namespace (you need list on
Secrets there), the MeterrAPIKey's condition from its namespace (get on meterrapikeys).
The key itself is never printed: only its id and hint.

Exit status: 0 the key was found (whatever the decision), 1 an error (flags, a malformed
key, the cluster unreadable), 3 no key record holds the key.

Flags:
`

// AddFlags registers the whois flags on fs, and a --help that explains the
// command.
func (o *WhoisOptions) AddFlags(fs *flag.FlagSet) {
	fs.Usage = func() {
		_, _ = io.WriteString(fs.Output(), WhoisUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.RecordsNamespace, "records-namespace", webhookserver.DefaultRecordsNamespace,
		"Namespace holding the key records (the auth server's and the manager's --records-namespace).")
	fs.StringVar(&o.KeyID, "key-id", "",
		"Look up the key version with this id instead of reading a key from standard input.")
	fs.StringVar(&o.Output, "o", "text", `Output format: "text" (aligned, for people) or "json" (for scripts; see docs/auth-server.md).`)
	fs.StringVar(&o.Output, "output", "text", "Same as -o.")
	fs.StringVar(&o.IP, "ip", "",
		"Decide a request from this client address (the TCP peer the auth server sees). Without it the peer is unknown, "+
			"which an IP-restricted key is refused from.")
	fs.StringVar(&o.Origin, "origin", "",
		"Decide a request with this Origin header (e.g. https://app.example.com), for domain restrictions.")
	fs.StringVar(&o.Method, "method", "",
		"Decide a request with this HTTP method (default GET).")
	fs.StringVar(&o.Path, "path", "",
		"Decide a forward-auth request for this original path (appended to /v1/auth/check, as Envoy does); needed with --route.")
	fs.StringVar(&o.Environment, "environment", "",
		"As the auth server's --environment: refuse keys of any other environment.")
	o.Routes = nil
	fs.Var(webhookserver.RouteListFlag(&o.Routes), "route",
		`As the auth server's --route, repeatable: "METHOD /path/prefix=permission".`)
	// The auth server's own trust flags: --ip is the TCP peer they apply to.
	webhookserver.AddTrustFlags(fs, &o.TrustedProxies, &o.TrustedHops)
	fs.StringVar(&o.ForwardedFor, "forwarded-for", "",
		"Send this X-Forwarded-For header (believed only when --ip is in --trusted-proxies).")
}

// decide reports whether a decision was asked for.
func (o *WhoisOptions) decide() bool {
	return o.IP != "" || o.Origin != "" || o.Method != "" || o.Path != "" || o.Environment != "" ||
		len(o.Routes) > 0 || len(o.TrustedProxies) > 0 || o.TrustedHops != 0 || o.ForwardedFor != ""
}

func (o *WhoisOptions) validate() error {
	var errs []error
	if o.Output != "text" && o.Output != "json" {
		errs = append(errs, fmt.Errorf("-o: %q is not text or json", o.Output))
	}
	if o.RecordsNamespace == "" {
		errs = append(errs, errors.New("--records-namespace must not be empty"))
	}
	if o.IP != "" {
		if _, err := netip.ParseAddr(o.IP); err != nil {
			errs = append(errs, fmt.Errorf("--ip: %q is not an IP address", o.IP))
		}
	}
	if o.Path != "" && !strings.HasPrefix(o.Path, "/") {
		errs = append(errs, fmt.Errorf("--path: %q must start with /", o.Path))
	}
	if len(o.Routes) > 0 && o.Path == "" {
		errs = append(errs, errors.New("--route needs --path: route rules apply to the original request's path"))
	}
	if o.Method != "" && strings.ContainsAny(o.Method, " \t\r\n") {
		errs = append(errs, fmt.Errorf("--method: %q is not an HTTP method", o.Method))
	}
	if err := webhookserver.ValidateTrustFlags(o.TrustedProxies, o.TrustedHops); err != nil {
		errs = append(errs, err)
	}
	switch o.Environment {
	case "", apikey.EnvDevelopment, apikey.EnvStaging, apikey.EnvProduction:
	default:
		errs = append(errs, fmt.Errorf("--environment: %q is not development, staging or production", o.Environment))
	}
	return errors.Join(errs...)
}

// WhoisResult is what whois found: the `-o json` output. Its field names are
// stable; fields may be added.
type WhoisResult struct {
	// Found is false when no key record holds the key (exit status 3).
	Found bool `json:"found"`
	// KeyID and Hint identify the key version; the key is never shown.
	KeyID string `json:"keyId"`
	Hint  string `json:"hint,omitempty"`
	// Record is the key record Secret, "namespace/name".
	Record   string         `json:"record,omitempty"`
	Owner    *WhoisOwner    `json:"owner,omitempty"`
	Version  WhoisVersion   `json:"version"`
	Resource *WhoisResource `json:"resource,omitempty"`
	Policy   *WhoisPolicy   `json:"policy,omitempty"`
	Decision *WhoisDecision `json:"decision,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	now      time.Time      `json:"-"`
	request  *WhoisOptions  `json:"-"`
	keyMode  bool           `json:"-"`
}

// WhoisOwner is the MeterrAPIKey a record belongs to.
type WhoisOwner struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// Version states.
const (
	StateCurrent   = "current"
	StatePrevious  = "previous"
	StateTombstone = "tombstone"
	StateUnknown   = "unknown"
)

// WhoisVersion is which version of its key the key is.
type WhoisVersion struct {
	// State is current, previous (accepted until ExpiresAt), tombstone
	// (refused with expired_api_key since ExpiresAt) or unknown.
	State     string     `json:"state"`
	NotBefore *time.Time `json:"notBefore,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// WhoisResource is what the cluster says of the MeterrAPIKey.
type WhoisResource struct {
	// Found is false when the MeterrAPIKey could not be read; Error says
	// why (not found, forbidden, ...).
	Found bool   `json:"found"`
	Error string `json:"error,omitempty"`
	// Ready is the Ready condition, when there is one.
	Ready *WhoisCondition `json:"ready,omitempty"`
	// CurrentKeyID is status.currentKey.id: the key in the workload Secret.
	CurrentKeyID string `json:"currentKeyId,omitempty"`
	// LastUsed is each version's status lastUsedAt, the current key first
	// (nil At: never used, or last-used is off).
	LastUsed []WhoisLastUsed `json:"lastUsed,omitempty"`
}

// WhoisLastUsed is a version's last accepted use, as its status says.
type WhoisLastUsed struct {
	ID    string     `json:"id"`
	State string     `json:"state"`
	At    *time.Time `json:"at,omitempty"`
}

// WhoisCondition is a condition's status, reason and message.
type WhoisCondition struct {
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// WhoisPolicy is what the auth server enforces for every version of the key.
type WhoisPolicy struct {
	Environment string   `json:"environment"`
	Permissions []string `json:"permissions"`
	// RequestsPerHour is the hourly limit; 0 with Unlimited true means none.
	RequestsPerHour int64      `json:"requestsPerHour"`
	Unlimited       bool       `json:"unlimited"`
	IPAllowlist     []string   `json:"ipAllowlist,omitempty"`
	Domains         []string   `json:"domains,omitempty"`
	Disabled        bool       `json:"disabled"`
	ExpiresAt       *time.Time `json:"expiresAt,omitempty"`
}

// WhoisDecision is the auth server's answer to the request described by the
// flags.
type WhoisDecision struct {
	Request WhoisRequest `json:"request"`
	Status  int          `json:"status"`
	// Code is "ok" or the answer's error code; Type and Message are the
	// error's.
	Code    string `json:"code"`
	Type    string `json:"type,omitempty"`
	Message string `json:"message,omitempty"`
	// Permissions and Environment are the 200 answer's.
	Permissions []string `json:"permissions,omitempty"`
	Environment string   `json:"environment,omitempty"`
	// Why explains the code in a sentence.
	Why string `json:"why"`
}

// WhoisRequest is the request whose answer was asked for.
type WhoisRequest struct {
	Method       string   `json:"method"`
	URL          string   `json:"url"`
	IP           string   `json:"ip,omitempty"`
	Origin       string   `json:"origin,omitempty"`
	ForwardedFor string   `json:"forwardedFor,omitempty"`
	Environment  string   `json:"environment,omitempty"`
	Routes       []string `json:"routes,omitempty"`
}

// RunWhois runs `meterr-operator whois` against the cluster restConfig
// returns; the flags and the key are checked before it is called.
func RunWhois(ctx context.Context, restConfig func() (*rest.Config, error), o WhoisOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	key, err := whoisKey(o, stdin, stderr)
	if err != nil {
		return err
	}
	cfg, err := restConfig()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: authv1alpha1.Scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return whois(ctx, c, o, key, clock.RealClock{}, stdout)
}

// whoisKey reads the key from stdin, unless --key-id is given. A malformed
// key is refused without being repeated.
func whoisKey(o WhoisOptions, stdin io.Reader, stderr io.Writer) (string, error) {
	if o.KeyID != "" {
		return "", nil
	}
	if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			_, _ = fmt.Fprintln(stderr, "Reading a key from standard input (end with Ctrl-D); a pipe keeps it off the screen: "+
				"kubectl get secret NAME -o jsonpath='{.data.api-key}' | base64 -d | meterr-operator whois")
		}
	}
	// A key is 55 bytes; read a little more so that anything longer is
	// refused as too long rather than cut.
	raw, err := io.ReadAll(io.LimitReader(bufio.NewReader(stdin), 4096))
	if err != nil {
		return "", fmt.Errorf("reading the key from standard input: %w", err)
	}
	key := strings.TrimSpace(string(raw))
	if key == "" {
		return "", errors.New("no key on standard input; pipe one in, or give --key-id")
	}
	if err := apikey.Parse(key); err != nil {
		// apikey's errors never contain the key.
		return "", fmt.Errorf("the key on standard input is malformed (%w); it is not an API key of meterr "+
			"(mtr_live_ or mtr_test_ and 46 base62 characters)", err)
	}
	return key, nil
}

// match is a key version found in a record.
type match struct {
	secret  *corev1.Secret
	rec     *record.Record
	version int
	hash    apikey.Hash
}

// whois looks the key (or o.KeyID when key is "") up and writes the result.
func whois(ctx context.Context, c client.Reader, o WhoisOptions, key string, clk clock.PassiveClock, out io.Writer) error {
	now := clk.Now()
	res := &WhoisResult{now: now, request: &o, keyMode: key != "", Version: WhoisVersion{State: StateUnknown}}
	var want apikey.Hash
	if key != "" {
		want = apikey.HashOf(key)
		res.KeyID = want.ID()
		res.Hint = apikey.Hint(key)
	} else {
		res.KeyID = o.KeyID
	}

	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.InNamespace(o.RecordsNamespace),
		client.MatchingLabels{authv1alpha1.LabelRecord: "true"}); err != nil {
		return fmt.Errorf("listing the key records in %s: %w", o.RecordsNamespace, err)
	}
	var found []match
	undecodable := 0
	for i := range secrets.Items {
		s := &secrets.Items[i]
		rec, err := record.Decode(s)
		if err != nil {
			undecodable++
			continue
		}
		for j, v := range rec.Keys {
			h, err := apikey.ParseHash(v.Hash)
			if err != nil {
				continue
			}
			if key != "" && h == want || key == "" && versionID(v, h) == o.KeyID {
				found = append(found, match{secret: s, rec: rec, version: j, hash: h})
			}
		}
	}
	if undecodable > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d key record(s) in %s could not be decoded and were not searched", undecodable, o.RecordsNamespace))
	}
	// One key hash, one owner: whois orders the claimants as the auth
	// server's index does.
	sort.SliceStable(found, func(i, j int) bool {
		a, b := found[i].secret, found[j].secret
		return index.ClaimedBefore(a.CreationTimestamp.Time, a.Name, b.CreationTimestamp.Time, b.Name)
	})
	for _, m := range found[min(1, len(found)):] {
		if m.hash != found[0].hash {
			return fmt.Errorf("key id %s names versions of different keys (in key records %s and %s); give the key on standard input instead",
				o.KeyID, found[0].secret.Name, m.secret.Name)
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("key record %s (owner %s) also holds this key; the auth server ignores it there, as %s claimed it first",
			m.secret.Name, m.rec.Owner, found[0].secret.Name))
	}

	idx := index.New()
	var entry *authz.Entry
	if len(found) > 0 {
		m := found[0]
		res.describe(m, now)
		if err := idx.Upsert(m.secret.Name, m.rec, m.secret.CreationTimestamp.Time); err != nil {
			// The parts the auth server cannot use; they fail closed.
			res.Warnings = append(res.Warnings, "the auth server cannot use all of this record: "+err.Error())
		}
		if key == "" {
			// No key to present: the version's entry, as the index finds
			// it for the key.
			if e, ok := idx.Lookup(m.hash); ok {
				entry = &e
			}
		}
		res.Resource = readResource(ctx, c, m.rec.Owner)
		if r := res.Resource; res.Version.State == StateCurrent && r.CurrentKeyID != "" && r.CurrentKeyID != res.KeyID {
			// Without an expiry, yet not the key in the workload Secret:
			// a rotation in progress (the record is written before the
			// Secret) or one the manager has not settled yet.
			res.Warnings = append(res.Warnings, "the MeterrAPIKey's status names "+r.CurrentKeyID+
				" as its current key (the one in the workload Secret); this version has no expiry yet: a rotation is in progress or not yet settled")
		}
	}

	if o.decide() {
		d, err := decideRequest(ctx, idx, entry, o, key, res, clk)
		if err != nil {
			return err
		}
		res.Decision = d
	}

	if err := res.write(out, o.Output); err != nil {
		return err
	}
	if !res.Found {
		return &ExitError{Code: WhoisExitUnknown}
	}
	return nil
}

// versionID is the id the auth server shows for a version (see
// authz.Compile): its own, or one derived from its hash.
func versionID(v record.Version, h apikey.Hash) string {
	if v.ID == "" {
		return h.ID()
	}
	return v.ID
}

func (res *WhoisResult) describe(m match, now time.Time) {
	v := m.rec.Keys[m.version]
	res.Found = true
	res.KeyID = versionID(v, m.hash)
	if res.Hint == "" {
		res.Hint = v.Hint
	}
	res.Record = m.secret.Namespace + "/" + m.secret.Name
	res.Owner = &WhoisOwner{Namespace: m.rec.Owner.Namespace, Name: m.rec.Owner.Name, UID: string(m.rec.Owner.UID)}
	res.Version.State = StateCurrent
	if !v.NotBefore.IsZero() {
		t := v.NotBefore.UTC()
		res.Version.NotBefore = &t
	}
	if v.ExpiresAt != nil {
		t := v.ExpiresAt.UTC()
		res.Version.ExpiresAt = &t
		res.Version.State = StatePrevious
		if v.Expired(now) {
			res.Version.State = StateTombstone
		}
	}
	p := m.rec.Policy
	res.Policy = &WhoisPolicy{
		Environment:     p.Environment,
		Permissions:     append([]string{}, p.Permissions...),
		RequestsPerHour: p.RequestsPerHour,
		Unlimited:       p.RequestsPerHour == 0,
		IPAllowlist:     p.IPAllowlist,
		Domains:         p.Domains,
		Disabled:        p.Disabled,
	}
	if p.ExpiresAt != nil {
		t := p.ExpiresAt.UTC()
		res.Policy.ExpiresAt = &t
	}
}

// readResource reads the MeterrAPIKey's Ready condition; a key that cannot be
// read (deleted, forbidden) is reported, not an error.
func readResource(ctx context.Context, c client.Reader, owner record.Owner) *WhoisResource {
	var mak authv1alpha1.MeterrAPIKey
	err := c.Get(ctx, types.NamespacedName{Namespace: owner.Namespace, Name: owner.Name}, &mak)
	switch {
	case apierrors.IsNotFound(err):
		return &WhoisResource{Error: "not found: the MeterrAPIKey was deleted (its record goes with it shortly)"}
	case apierrors.IsForbidden(err):
		return &WhoisResource{Error: "forbidden: your kubeconfig may not get meterrapikeys in " + owner.Namespace}
	case err != nil:
		return &WhoisResource{Error: err.Error()}
	}
	r := &WhoisResource{Found: true}
	if owner.UID != "" && mak.UID != owner.UID {
		r.Error = "a MeterrAPIKey of this name exists, but not the one this key was issued to (different uid): it was deleted and re-created"
	}
	lastUsed := func(id, state string, at *metav1.Time) {
		u := WhoisLastUsed{ID: id, State: state}
		if at != nil {
			t := at.UTC()
			u.At = &t
		}
		r.LastUsed = append(r.LastUsed, u)
	}
	if k := mak.Status.CurrentKey; k != nil {
		r.CurrentKeyID = k.ID
		lastUsed(k.ID, StateCurrent, k.LastUsedAt)
	}
	for _, k := range mak.Status.PreviousKeys {
		lastUsed(k.ID, StatePrevious, k.LastUsedAt)
	}
	if cond := meta.FindStatusCondition(mak.Status.Conditions, authv1alpha1.ConditionReady); cond != nil {
		r.Ready = &WhoisCondition{Status: string(cond.Status), Reason: cond.Reason, Message: cond.Message}
	}
	return r
}

// decideRequest has the auth server's own code explain the request the
// flags describe (webhookserver.Server.Explain), with an index that holds
// only the found record, an in-memory limiter and the clock. entry, with
// --key-id, is the found version's.
func decideRequest(ctx context.Context, idx webhookserver.Index, entry *authz.Entry, o WhoisOptions, key string, res *WhoisResult, clk clock.PassiveClock) (*WhoisDecision, error) {
	srv, err := webhookserver.NewServer(webhookserver.ServerConfig{
		Index:          idx,
		Limiter:        ratelimit.NewMemory(),
		Clock:          clk,
		Environment:    o.Environment,
		TrustedProxies: o.TrustedProxies,
		TrustedHops:    o.TrustedHops,
		Routes:         o.Routes,
	})
	if err != nil {
		return nil, err
	}
	srv.SetReady(true)
	method := o.Method
	if method == "" {
		method = http.MethodGet
	}
	h := http.Header{}
	if o.Origin != "" {
		h.Set("Origin", o.Origin)
	}
	if o.ForwardedFor != "" {
		h.Set("X-Forwarded-For", o.ForwardedFor)
	}
	req := request.Request{Endpoint: request.EndpointCheck, Headers: request.HTTPHeaders(h), Method: method, Path: o.Path}
	if key != "" {
		req.Credential = "Bearer " + key
	}
	if o.IP != "" {
		req.Peer, _ = netip.ParseAddr(o.IP)
	}
	x := srv.Explain(ctx, req, entry)

	d := &WhoisDecision{
		Request: WhoisRequest{Method: method, URL: "/v1/auth/check" + o.Path, IP: o.IP, Origin: o.Origin,
			ForwardedFor: o.ForwardedFor, Environment: o.Environment},
		Status: x.Status, Code: x.Code, Type: x.Type, Message: x.Message,
		Permissions: x.Permissions, Environment: x.Environment,
	}
	for _, r := range o.Routes {
		d.Request.Routes = append(d.Request.Routes, r.String())
	}
	d.Why = why(d, res, o)
	return d, nil
}

// why explains a decision in a sentence, from what whois knows of the key.
func why(d *WhoisDecision, res *WhoisResult, o WhoisOptions) string {
	p := res.Policy
	switch d.Code {
	case "ok":
		if p != nil && p.RequestsPerHour > 0 {
			return "the key is valid here and its restrictions allow the request; the auth server would count it against " +
				strconv.FormatInt(p.RequestsPerHour, 10) + " requests per hour (its current count is not known to whois)"
		}
		return "the key is valid here and its restrictions allow the request"
	case "invalid_api_key":
		switch {
		case !res.Found:
			return "no key record holds this key (the auth server answers unknown, malformed and disabled keys alike)"
		case p != nil && p.Disabled:
			return "the key is disabled (the auth server answers it as an unknown key)"
		}
		return "the key is not usable (the auth server answers unknown, malformed and disabled keys alike)"
	case "expired_api_key":
		if res.Version.State == StateTombstone {
			return "this version was replaced and its overlap ended at " + res.Version.ExpiresAt.Format(time.RFC3339)
		}
		if p != nil && p.ExpiresAt != nil {
			return "the key expired at " + p.ExpiresAt.Format(time.RFC3339) + " (spec.expiresAt)"
		}
		return "the key has expired"
	case "environment_mismatch":
		return "the key is a " + p.Environment + " key; the auth server (--environment) accepts " + o.Environment + " keys only"
	case "ip_not_allowed":
		from := "an unknown address (give --ip)"
		if o.IP != "" {
			from = o.IP
			if o.ForwardedFor != "" && len(o.TrustedProxies) > 0 {
				from = "the client address taken from --forwarded-for via the trusted proxy " + o.IP
			}
		}
		return "the request comes from " + from + ", which is not in the key's IP allowlist " + strings.Join(p.IPAllowlist, ", ")
	case "domain_not_allowed":
		if o.Origin == "" {
			return "the key is restricted to domains " + strings.Join(p.Domains, ", ") + " and the request has no Origin (give --origin)"
		}
		return "the Origin's host is not one of the key's domains " + strings.Join(p.Domains, ", ")
	case "insufficient_permissions":
		return "the route rules require a permission this key (" + strings.Join(p.Permissions, ", ") + ") does not hold"
	case "rate_limit_exceeded":
		return "the key is over its hourly limit"
	case "invalid_request":
		return "the auth server cannot decide this request as described (see the message)"
	}
	return ""
}

// write prints the result as text or JSON.
func (res *WhoisResult) write(out io.Writer, format string) error {
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	line := func(k, v string) { _, _ = fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	keyDesc := res.KeyID
	if res.Hint != "" {
		keyDesc += " (" + res.Hint + ")"
	}
	line("key", keyDesc)
	if !res.Found {
		if res.keyMode {
			line("version", "unknown: no key record in "+res.request.RecordsNamespace+" holds this key")
		} else {
			line("version", "unknown: no key record in "+res.request.RecordsNamespace+" has a version with this id")
		}
	} else {
		line("owner", res.Owner.Namespace+"/"+res.Owner.Name)
		line("record", res.Record)
		v := res.Version
		issued := ""
		if v.NotBefore != nil {
			issued = ", issued " + ts(*v.NotBefore)
		}
		switch v.State {
		case StateCurrent:
			line("version", "current"+issued)
		case StatePrevious:
			line("version", "previous, accepted until "+ts(*v.ExpiresAt)+" ("+v.ExpiresAt.Sub(res.now).Round(time.Second).String()+" left)"+issued)
		case StateTombstone:
			line("version", "tombstone since "+ts(*v.ExpiresAt)+": refused with expired_api_key"+issued)
		}
		r := res.Resource
		switch {
		case r == nil:
		case !r.Found:
			line("ready", "unknown: MeterrAPIKey "+r.Error)
		case r.Ready == nil:
			line("ready", "no Ready condition yet")
		default:
			line("ready", r.Ready.Status+" ("+r.Ready.Reason+"): "+r.Ready.Message)
		}
		if r != nil && r.Found && r.Error != "" {
			line("", r.Error)
		}
		if r != nil && r.Found {
			for _, u := range r.LastUsed {
				when := "never"
				if u.At != nil {
					when = ts(*u.At) + " (" + res.now.Sub(*u.At).Round(time.Second).String() + " ago)"
				}
				line("last used", u.ID+" ("+u.State+"): "+when)
			}
		}
		p := res.Policy
		line("environment", p.Environment)
		line("permissions", strings.Join(p.Permissions, ", "))
		if p.Unlimited {
			line("limit", "unlimited")
		} else {
			line("limit", strconv.FormatInt(p.RequestsPerHour, 10)+" requests per hour")
		}
		line("ip allowlist", orAny(p.IPAllowlist))
		line("domains", orAny(p.Domains))
		if p.Disabled {
			line("disabled", "yes: every version is refused with invalid_api_key")
		} else {
			line("disabled", "no")
		}
		switch {
		case p.ExpiresAt == nil:
			line("expires", "never")
		case !res.now.Before(*p.ExpiresAt):
			line("expires", "expired at "+ts(*p.ExpiresAt))
		default:
			line("expires", ts(*p.ExpiresAt))
		}
	}
	if d := res.Decision; d != nil {
		_, _ = io.WriteString(tw, "\n")
		req := d.Request.Method + " " + d.Request.URL
		if d.Request.IP != "" {
			req += " from " + d.Request.IP
		} else {
			req += " from an unknown address"
		}
		if d.Request.ForwardedFor != "" {
			req += ", X-Forwarded-For: " + d.Request.ForwardedFor
		}
		if d.Request.Origin != "" {
			req += ", Origin: " + d.Request.Origin
		}
		line("request", req)
		if d.Request.Environment != "" || len(d.Request.Routes) > 0 {
			conf := []string{}
			if d.Request.Environment != "" {
				conf = append(conf, "--environment "+d.Request.Environment)
			}
			for _, r := range d.Request.Routes {
				conf = append(conf, "--route '"+r+"'")
			}
			line("auth server", strings.Join(conf, " "))
		}
		if d.Code == "ok" {
			line("answer", strconv.Itoa(d.Status)+" ok: permissions "+strings.Join(d.Permissions, ", ")+", environment "+d.Environment)
		} else {
			line("answer", strconv.Itoa(d.Status)+" "+d.Code+": "+d.Message)
		}
		line("why", d.Why)
	}
	for _, w := range res.Warnings {
		line("warning", w)
	}
	return tw.Flush()
}

func orAny(l []string) string {
	if len(l) == 0 {
		return "any"
	}
	return strings.Join(l, ", ")
}
