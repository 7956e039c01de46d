package webhookserver

import (
	"flag"
	"io"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

func TestAddFlagsDefaults(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("auth-server", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o, DefaultOptions()) {
		t.Fatalf("defaults %+v, want %+v", o, DefaultOptions())
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Usage) < 20 {
			t.Errorf("--%s has no real help", f.Name)
		}
	})
	for _, name := range []string{"listen", "metrics-bind-address", "records-namespace", "environment", "trusted-proxies",
		"route", "tls-cert-file", "tls-key-file", "shutdown-timeout", "max-header-bytes",
		"redis-url", "redis-timeout", "redis-failure-mode", "log-decisions", "gc-tuning", "deadline-sweep", "keepalive-takeover", "release-startup-pages", "credential-sources", "key-headers"} {
		if fs.Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
}

func TestAddFlagsParse(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("auth-server", flag.ContinueOnError)
	o.AddFlags(fs)
	err := fs.Parse([]string{
		"--listen=127.0.0.1:8443", "--metrics-bind-address=0", "--records-namespace=keys",
		"--environment=staging", "--trusted-proxies=10.0.0.0/8,fd00::/8", "--trusted-proxies=192.0.2.1",
		"--route=GET /v1/usage=read", "--route", "* /v1/billing=admin",
		"--tls-cert-file=/c", "--tls-key-file=/k", "--shutdown-timeout=3s", "--max-header-bytes=32768",
		"--redis-url=redis://redis:6379/2", "--redis-timeout=250ms", "--redis-failure-mode=closed",
		"--log-decisions=denied", "--gc-tuning=false", "--deadline-sweep=250ms", "--keepalive-takeover=false",
		"--release-startup-pages=false", "--credential-sources=authorization,header:X-API-Key",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{
		Listen: "127.0.0.1:8443", MetricsAddr: "0", RecordsNamespace: "keys", Environment: "staging",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.0.2.1/32")},
		Routes:         []Route{{Method: "GET", Prefix: "/v1/usage", Permission: "read"}, {Method: "*", Prefix: "/v1/billing", Permission: "admin"}},
		TLSCertFile:    "/c", TLSKeyFile: "/k", ShutdownTimeout: 3 * time.Second, MaxHeaderBytes: 32768,
		RedisURL: "redis://redis:6379/2", RedisTimeout: 250 * time.Millisecond, RedisFailureMode: ratelimit.FailClosed,
		LogDecisions: LogDecisionsDenied, GCTuning: false, DeadlineSweep: 250 * time.Millisecond,
		CredentialSources: mustSources(t, "authorization,header:X-API-Key"),
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("parsed %+v\nwant %+v", o, want)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{{"--trusted-proxies=10.0.0.1/8"}, {"--route=GET /x"}, {"--route=GET /x=owner"},
		{"--credential-sources=header:"}, {"--credential-sources=cookie:a"}} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var o Options
		o.AddFlags(fs)
		if err := fs.Parse(bad); err == nil {
			t.Errorf("%v parsed", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Options)
		want string
	}{
		{func(o *Options) { o.Listen = "" }, "--listen"},
		{func(o *Options) { o.Listen = "8080" }, "--listen"},
		{func(o *Options) { o.MetricsAddr = "nope" }, "--metrics-bind-address"},
		{func(o *Options) { o.MetricsAddr = o.Listen }, "--metrics-bind-address"},
		{func(o *Options) { o.RecordsNamespace = "" }, "--records-namespace"},
		{func(o *Options) { o.RecordsNamespace = "Meterr_System" }, "--records-namespace"},
		{func(o *Options) { o.Environment = "prod" }, "--environment"},
		{func(o *Options) {
			o.Routes = []Route{{Method: "GET", Prefix: "/a", Permission: "read"}, {Method: "GET", Prefix: "/a", Permission: "write"}}
		}, "--route"},
		{func(o *Options) { o.TLSCertFile = "/c" }, "--tls-cert-file"},
		{func(o *Options) { o.TLSKeyFile = "/k" }, "--tls-cert-file"},
		{func(o *Options) { o.ShutdownTimeout = 0 }, "--shutdown-timeout"},
		{func(o *Options) { o.MaxHeaderBytes = 4096 }, "--max-header-bytes"},
		{func(o *Options) { o.RedisTimeout = 0 }, "--redis-timeout"},
		{func(o *Options) { o.RedisFailureMode = "deny" }, "--redis-failure-mode"},
		{func(o *Options) { o.RedisURL = "http://user:hunter2@redis:6379" }, "--redis-url"},
		{func(o *Options) { o.LogDecisions = "denials" }, "--log-decisions"},
		{func(o *Options) { o.DeadlineSweep = -time.Millisecond }, "--deadline-sweep"},
		{func(o *Options) { o.DeadlineSweep = 2 * time.Second }, "--deadline-sweep"},
	} {
		o := DefaultOptions()
		tc.mut(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one about %s", o, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error repeats a password: %v", err)
		}
	}
	o := DefaultOptions()
	o.Listen, o.Environment, o.ShutdownTimeout = "", "x", -1
	if err := o.Validate(); err == nil || strings.Count(err.Error(), "--") < 3 {
		t.Errorf("every problem should be reported at once: %v", err)
	}
}

func TestBuildInfo(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"v1.2.3", "v1.2.3"}, {"", "unknown"}} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newBuildInfo(tc.in, ""))
		if got := counterValue(t, reg, "meterr_build_info"); got != 1 {
			t.Fatalf("meterr_build_info = %v", got)
		}
		mfs, _ := reg.Gather()
		labels := map[string]string{}
		for _, l := range mfs[0].GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != tc.want || labels["goversion"] != runtime.Version() || labels["commit"] == "" {
			t.Fatalf("labels %v, want version %q", labels, tc.want)
		}
	}
}

func mustSources(t *testing.T, s string) request.Sources {
	t.Helper()
	ss, err := request.ParseSources(s)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// --key-headers (DESIGN.md's flag) adds header sources beside
// Authorization; a name that cannot hold a key is refused naming the flag.
func TestKeyHeaders(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("auth-server", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--key-headers=X-API-Key, X-Token", "--key-headers=x-api-key"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := o.credentialSources().String(); got != "authorization,header:X-Api-Key,header:X-Token" {
		t.Fatalf("sources %q", got)
	}
	o.KeyHeaders = []string{"Cookie"}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--key-headers") {
		t.Fatalf("Validate = %v, want a --key-headers error", err)
	}
}
