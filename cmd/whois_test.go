package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

var whoisNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// whoisFixture is a cluster with one MeterrAPIKey (team-a/web) whose record
// holds a tombstone, a previous and a current key.
type whoisFixture struct {
	t                            *testing.T
	tombstone, previous, current string
	stranger                     string
	policy                       record.Policy
	objects                      []client.Object
	funcs                        interceptor.Funcs
}

func newWhoisFixture(t *testing.T, pol record.Policy) *whoisFixture {
	f := &whoisFixture{t: t, policy: pol}
	gen := func() string {
		k, err := apikey.Generate(pol.Environment)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	f.tombstone, f.previous, f.current, f.stranger = gen(), gen(), gen(), gen()
	ended := metav1.NewTime(whoisNow.Add(-time.Hour))
	ends := metav1.NewTime(whoisNow.Add(90 * time.Minute))
	t1 := record.NewVersion(f.tombstone, whoisNow.Add(-72*time.Hour))
	t1.ExpiresAt = &ended
	t2 := record.NewVersion(f.previous, whoisNow.Add(-48*time.Hour))
	t2.ExpiresAt = &ends
	t3 := record.NewVersion(f.current, whoisNow.Add(-time.Hour))
	rec := &record.Record{
		Owner:  record.Owner{Namespace: "team-a", Name: "web", UID: "uid-web"},
		Policy: pol,
		Keys:   []record.Version{t1, t2, t3},
	}
	data, err := record.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	f.objects = append(f.objects,
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: record.Name("team-a", "web", "uid-web"), Namespace: "meterr-system",
				Labels: record.Labels(), CreationTimestamp: metav1.NewTime(whoisNow.Add(-100 * time.Hour)),
			},
			Data: map[string][]byte{record.DataKey: data},
		},
		&authv1alpha1.MeterrAPIKey{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a", UID: "uid-web"},
			Status: authv1alpha1.MeterrAPIKeyStatus{
				CurrentKey:   &authv1alpha1.CurrentKeyStatus{ID: apikey.HashOf(f.current).ID(), LastUsedAt: ptr.To(metav1.NewTime(whoisNow.Add(-3 * time.Minute)))},
				PreviousKeys: []authv1alpha1.PreviousKeyStatus{{ID: apikey.HashOf(f.previous).ID()}}, Conditions: []metav1.Condition{{
					Type: "Ready", Status: metav1.ConditionTrue, Reason: "KeyReady", Message: "the current key is issued and delivered",
					LastTransitionTime: metav1.NewTime(whoisNow),
				}}},
		},
	)
	return f
}

// run runs whois with key (or --key-id) and returns its output; it fails the
// test if a plaintext key appears in it.
func (f *whoisFixture) run(key string, args ...string) (string, error) {
	f.t.Helper()
	c := fake.NewClientBuilder().WithScheme(authv1alpha1.Scheme).WithObjects(f.objects...).WithInterceptorFuncs(f.funcs).Build()
	var o WhoisOptions
	fs := flag.NewFlagSet("whois", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		f.t.Fatal(err)
	}
	if err := o.validate(); err != nil {
		f.t.Fatal(err)
	}
	var out bytes.Buffer
	err := whois(context.Background(), c, o, key, clocktesting.NewFakePassiveClock(whoisNow), &out)
	for _, k := range []string{f.tombstone, f.previous, f.current, f.stranger} {
		if strings.Contains(out.String(), k) || err != nil && strings.Contains(err.Error(), k) {
			f.t.Fatalf("whois printed a key:\n%s", out.String())
		}
	}
	return out.String(), err
}

func (f *whoisFixture) json(key string, args ...string) WhoisResult {
	f.t.Helper()
	out, err := f.run(key, append(args, "-o", "json")...)
	var ee *ExitError
	if err != nil && !errors.As(err, &ee) {
		f.t.Fatal(err)
	}
	var r WhoisResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		f.t.Fatalf("%v:\n%s", err, out)
	}
	return r
}

func standardPolicy() record.Policy {
	return record.Policy{Permissions: []string{"read"}, Environment: "production", RequestsPerHour: 1000}
}

func TestWhoisVersionStates(t *testing.T) {
	f := newWhoisFixture(t, standardPolicy())
	for _, tc := range []struct {
		name  string
		key   string
		state string
		text  []string
	}{
		{"current", f.current, StateCurrent, []string{"version      current, issued 2026-11-30T11:00:00Z"}},
		{"previous", f.previous, StatePrevious, []string{"version      previous, accepted until 2026-11-30T13:30:00Z (1h30m0s left)"}},
		{"tombstone", f.tombstone, StateTombstone, []string{"version      tombstone since 2026-11-30T11:00:00Z: refused with expired_api_key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := f.run(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range append(tc.text,
				"key          "+apikey.HashOf(tc.key).ID()+" ("+apikey.Hint(tc.key)+")",
				"owner        team-a/web",
				"record       meterr-system/"+record.Name("team-a", "web", "uid-web"),
				"ready        True (KeyReady): the current key is issued and delivered",
				"last used    "+apikey.HashOf(f.current).ID()+" (current): "+whoisNow.Add(-3*time.Minute).UTC().Format(time.RFC3339)+" (3m0s ago)",
				"last used    "+apikey.HashOf(f.previous).ID()+" (previous): never",
				"environment  production", "permissions  read", "limit        1000 requests per hour",
				"ip allowlist any", "domains      any", "disabled     no", "expires      never") {
				if !contains(out, want) {
					t.Errorf("no %q in\n%s", want, out)
				}
			}
			// The same by key id, and in JSON.
			byID := f.json("", "--key-id", apikey.HashOf(tc.key).ID())
			byKey := f.json(tc.key)
			if !byKey.Found || byKey.Version.State != tc.state || byKey.Owner.Namespace != "team-a" || byKey.Owner.Name != "web" {
				t.Errorf("json: %+v", byKey)
			}
			if byID.Version.State != tc.state || byID.KeyID != byKey.KeyID || byID.Hint != byKey.Hint {
				t.Errorf("by id %+v, by key %+v", byID, byKey)
			}
		})
	}

	t.Run("unknown", func(t *testing.T) {
		out, err := f.run(f.stranger)
		var ee *ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != WhoisExitUnknown {
			t.Fatalf("exit %v, want %d", err, WhoisExitUnknown)
		}
		if !contains(out, "version  unknown: no key record in meterr-system holds this key") ||
			!contains(out, apikey.HashOf(f.stranger).ID()) {
			t.Errorf("output:\n%s", out)
		}
		if r := f.json("", "--key-id", "000000000000"); r.Found || r.Version.State != StateUnknown {
			t.Errorf("json: %+v", r)
		}
	})
}

func TestWhoisResourceUnreadable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Group: "auth.meterr.ai", Resource: "meterrapikeys"}, "web", errors.New("no")),
			"ready        unknown: MeterrAPIKey forbidden: your kubeconfig may not get meterrapikeys in team-a"},
		{"not found", apierrors.NewNotFound(schema.GroupResource{Group: "auth.meterr.ai", Resource: "meterrapikeys"}, "web"),
			"ready        unknown: MeterrAPIKey not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newWhoisFixture(t, standardPolicy())
			f.funcs.Get = func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*authv1alpha1.MeterrAPIKey); ok {
					return tc.err
				}
				return c.Get(ctx, key, obj, opts...)
			}
			out, err := f.run(f.current)
			if err != nil {
				t.Fatal(err)
			}
			if !contains(out, tc.want) || !contains(out, "owner        team-a/web") {
				t.Errorf("no %q in\n%s", tc.want, out)
			}
		})
	}
}

func TestWhoisRestrictions(t *testing.T) {
	exp := metav1.NewTime(whoisNow.Add(24 * time.Hour))
	pol := record.Policy{Permissions: []string{"read", "write"}, Environment: "staging", RequestsPerHour: 0,
		IPAllowlist: []string{"10.0.0.0/8", "2001:db8::/32"}, Domains: []string{"app.example.com", "*.example.org"},
		Disabled: true, ExpiresAt: &exp}
	f := newWhoisFixture(t, pol)
	out, err := f.run(f.current)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"environment  staging", "permissions  read, write", "limit        unlimited",
		"ip allowlist 10.0.0.0/8, 2001:db8::/32", "domains      app.example.com, *.example.org",
		"disabled     yes", "expires      2026-12-01T12:00:00Z"} {
		if !contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	r := f.json(f.current)
	if p := r.Policy; p == nil || !p.Unlimited || !p.Disabled || len(p.IPAllowlist) != 2 || p.ExpiresAt == nil {
		t.Errorf("json policy: %+v", r.Policy)
	}
}

func TestWhoisDecisions(t *testing.T) {
	restricted := standardPolicy()
	restricted.IPAllowlist = []string{"10.0.0.0/8"}
	restricted.Domains = []string{"app.example.com"}
	route := []string{"--route", "POST /v1/usage=write", "--route", "GET /v1=read"}
	for _, tc := range []struct {
		name    string
		policy  record.Policy
		version func(*whoisFixture) string
		args    []string
		status  int
		code    string
		message string
		why     string
	}{
		{name: "ip not allowed", policy: restricted, args: []string{"--ip", "192.0.2.7", "--origin", "https://app.example.com"},
			status: 403, code: "ip_not_allowed", message: "API key not allowed from 192.0.2.7", why: "192.0.2.7, which is not in the key's IP allowlist 10.0.0.0/8"},
		{name: "no ip", policy: restricted, args: []string{"--origin", "https://app.example.com"},
			status: 403, code: "ip_not_allowed", message: "API key not allowed from an unknown address"},
		{name: "ip via a trusted proxy", policy: restricted,
			args:   []string{"--ip", "10.9.9.9", "--trusted-proxies", "10.9.0.0/16", "--forwarded-for", "198.51.100.1", "--origin", "https://app.example.com"},
			status: 403, code: "ip_not_allowed", message: "API key not allowed from 198.51.100.1"},
		{name: "domain not allowed", policy: restricted, args: []string{"--ip", "10.1.2.3", "--origin", "https://evil.example.net"},
			status: 403, code: "domain_not_allowed", message: "Requests from this domain are not allowed for this API key"},
		{name: "allowed", policy: restricted, args: []string{"--ip", "10.1.2.3", "--origin", "https://app.example.com"},
			status: 200, code: "ok"},
		{name: "route requires write", policy: standardPolicy(), args: append([]string{"--method", "POST", "--path", "/v1/usage/events"}, route...),
			status: 403, code: "insufficient_permissions", message: "API key lacks the required permission: write"},
		{name: "route requires read", policy: standardPolicy(), args: append([]string{"--path", "/v1/keys"}, route...),
			status: 200, code: "ok"},
		{name: "environment mismatch", policy: standardPolicy(), args: []string{"--environment", "staging"},
			status: 403, code: "environment_mismatch", why: "production key"},
		{name: "tombstone", policy: standardPolicy(), version: func(f *whoisFixture) string { return f.tombstone }, args: []string{"--ip", "10.1.2.3"},
			status: 401, code: "expired_api_key", why: "overlap ended at 2026-11-30T11:00:00Z"},
		{name: "previous", policy: standardPolicy(), version: func(f *whoisFixture) string { return f.previous }, args: []string{"--ip", "10.1.2.3"},
			status: 200, code: "ok"},
		{name: "disabled", policy: record.Policy{Permissions: []string{"read"}, Environment: "production", Disabled: true}, args: []string{"--ip", "10.1.2.3"},
			status: 401, code: "invalid_api_key", why: "disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newWhoisFixture(t, tc.policy)
			key := f.current
			if tc.version != nil {
				key = tc.version(f)
			}
			byKey := f.json(key, tc.args...)
			byID := f.json("", append([]string{"--key-id", apikey.HashOf(key).ID()}, tc.args...)...)
			for mode, r := range map[string]WhoisResult{"key": byKey, "key id": byID} {
				d := r.Decision
				if d == nil {
					t.Fatalf("%s: no decision", mode)
				}
				if d.Status != tc.status || d.Code != tc.code || tc.message != "" && d.Message != tc.message || !strings.Contains(d.Why, tc.why) {
					t.Errorf("%s: got %d %s %q (%s), want %d %s %q (%s)", mode, d.Status, d.Code, d.Message, d.Why, tc.status, tc.code, tc.message, tc.why)
				}
				if tc.code == "ok" && (strings.Join(d.Permissions, ",") != strings.Join(tc.policy.Permissions, ",") || d.Environment != "production") {
					t.Errorf("%s: 200 with %v %q", mode, d.Permissions, d.Environment)
				}
			}
			if !sameDecision(byKey.Decision, byID.Decision) {
				t.Errorf("key id mode decided %+v, key mode %+v", byID.Decision, byKey.Decision)
			}

			out, err := f.run(key, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			want := "answer       " + strconv.Itoa(tc.status) + " " + tc.code
			if !contains(out, want) || tc.message != "" && !contains(out, tc.message) {
				t.Errorf("no %q / %q in\n%s", want, tc.message, out)
			}
		})
	}

	t.Run("unknown key", func(t *testing.T) {
		f := newWhoisFixture(t, standardPolicy())
		r := f.json(f.stranger, "--ip", "10.1.2.3")
		if r.Found || r.Decision == nil || r.Decision.Status != 401 || r.Decision.Code != "invalid_api_key" {
			t.Errorf("%+v %+v", r, r.Decision)
		}
	})
}

func sameDecision(a, b *WhoisDecision) bool {
	return a.Status == b.Status && a.Code == b.Code && a.Type == b.Type && a.Message == b.Message && a.Why == b.Why &&
		strings.Join(a.Permissions, ",") == strings.Join(b.Permissions, ",") && a.Environment == b.Environment
}

func TestWhoisKeyFromStdin(t *testing.T) {
	key, err := apikey.Generate("production")
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	got, err := whoisKey(WhoisOptions{}, strings.NewReader("  "+key+"\n\n"), &stderr)
	if err != nil || got != key {
		t.Fatalf("whitespace is trimmed: %v", err)
	}
	typo := []byte(key)
	typo[20] ^= 1
	for _, in := range []string{string(typo), key + "x", "hunter2", ""} {
		_, err := whoisKey(WhoisOptions{}, strings.NewReader(in), &stderr)
		if err == nil {
			t.Errorf("accepted %q", in)
			continue
		}
		if in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("the error repeats the input: %v", err)
		}
	}
	if got, err := whoisKey(WhoisOptions{KeyID: "abc"}, strings.NewReader("ignored"), &stderr); err != nil || got != "" {
		t.Errorf("--key-id reads no key: %q %v", got, err)
	}
}

func TestWhoisHashClaimedTwice(t *testing.T) {
	f := newWhoisFixture(t, standardPolicy())
	// A second, later record claiming the current key: the first keeps it.
	rec := &record.Record{Owner: record.Owner{Namespace: "team-b", Name: "copy", UID: types.UID("uid-copy")},
		Policy: standardPolicy(), Keys: []record.Version{record.NewVersion(f.current, whoisNow)}}
	data, _ := record.Encode(rec)
	f.objects = append(f.objects, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mak-0000", Namespace: "meterr-system", Labels: record.Labels(),
			CreationTimestamp: metav1.NewTime(whoisNow)},
		Data: map[string][]byte{record.DataKey: data},
	})
	r := f.json(f.current)
	if r.Owner == nil || r.Owner.Name != "web" || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "team-b/copy") {
		t.Errorf("%+v %v", r.Owner, r.Warnings)
	}
}

// contains compares text output with runs of spaces taken as one space: the
// columns' width depends on the longest label.
func contains(out, want string) bool {
	squash := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	return strings.Contains(squash(out), squash(want))
}

func TestWhoisUndeliveredVersion(t *testing.T) {
	f := newWhoisFixture(t, standardPolicy())
	mak := f.objects[1].(*authv1alpha1.MeterrAPIKey)
	if r := f.json(f.current); len(r.Warnings) != 0 || r.Resource.CurrentKeyID != apikey.HashOf(f.current).ID() {
		t.Fatalf("the delivered key: %v %+v", r.Warnings, r.Resource)
	}
	mak.Status.CurrentKey.ID = "0123456789ab"
	r := f.json(f.current)
	if r.Version.State != StateCurrent || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "0123456789ab") {
		t.Errorf("%+v %v", r.Version, r.Warnings)
	}
}
