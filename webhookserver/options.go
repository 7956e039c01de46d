package webhookserver

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// Defaults of the auth server's flags.
const (
	DefaultListen           = ":8080"
	DefaultMetricsAddr      = ":9090"
	DefaultRecordsNamespace = "meterr-system"
	DefaultShutdownTimeout  = 15 * time.Second
	DefaultMaxHeaderBytes   = 64 << 10
	// DefaultDeadlineSweep is how late a timeout of the API port may fire
	// (see package sweeper).
	DefaultDeadlineSweep = 100 * time.Millisecond
	// maxDeadlineSweep bounds --deadline-sweep: a slower sweep would let
	// the 5 s header timeout run late by more than a fifth.
	maxDeadlineSweep = time.Second
)

// Options are the auth server's settings, one field per flag.
type Options struct {
	// Listen is the address of the auth API (--listen).
	Listen string
	// GRPCListen, when set, serves Envoy's ext_authz v3 over gRPC
	// (envoy.service.auth.v3.Authorization/Check) and the gRPC health
	// service (--grpc-listen).
	GRPCListen string
	// MetricsAddr serves Prometheus metrics on /metrics; "0" turns it off
	// (--metrics-bind-address).
	MetricsAddr string
	// UsageTokenFile, when set, serves the usage report (GET /v1/usage,
	// internal/usage) on the metrics port to callers bearing the token
	// the file holds: how the manager learns each key version's last use
	// (--usage-token-file).
	UsageTokenFile string
	// RecordsNamespace holds the key records (--records-namespace).
	RecordsNamespace string
	// Environment, when set, refuses keys of any other environment
	// (--environment).
	Environment string
	// TrustedProxies are the peers whose X-Forwarded-For is believed
	// (--trusted-proxies).
	TrustedProxies []netip.Prefix
	// TrustedHops, when positive, takes the client address N places from
	// the right of a trusted peer's X-Forwarded-For (--trusted-hops).
	TrustedHops int
	// Routes require permissions on forward-auth requests (--route).
	Routes []Route
	// CredentialSources are where a request may carry its key
	// (--credential-sources); nil is Authorization: Bearer alone.
	CredentialSources request.Sources
	// KeyHeaders are header names besides Authorization: Bearer that may
	// carry the key (--key-headers, DESIGN.md's contract): each adds a
	// header:<Name> source to CredentialSources.
	KeyHeaders []string
	// TLSCertFile and TLSKeyFile, both or neither, serve the auth API over
	// TLS (--tls-cert-file, --tls-key-file).
	TLSCertFile string
	TLSKeyFile  string
	// GRPCClientCA, when set, requires every gRPC caller to present a
	// client certificate verified against this PEM bundle (re-read when the
	// file changes); such a caller may state the client's address in its
	// CheckRequest (--grpc-client-ca).
	GRPCClientCA string
	// GRPCClientSANs, when set, also requires the client certificate to
	// name one of these DNS names or URIs (--grpc-client-san).
	GRPCClientSANs []string
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after the context is cancelled (--shutdown-timeout).
	ShutdownTimeout time.Duration
	// MaxHeaderBytes caps the request line and headers; larger requests get
	// 431 (--max-header-bytes).
	MaxHeaderBytes int
	// ShutdownDelay keeps serving, unready, for this long after termination
	// starts, so load balancers stop sending before the listener closes
	// (--shutdown-delay).
	ShutdownDelay time.Duration
	// RedisURL, when set, shares rate-limit counts between replicas through
	// Redis: one server (redis://, rediss://), a Sentinel-managed master
	// (redis-sentinel://) or a Cluster (redis-cluster://) (--redis-url;
	// $MTR_REDIS_URL when the flag is empty, so a password can come from a
	// Secret).
	RedisURL string
	// RedisTimeout bounds each Redis command (--redis-timeout).
	RedisTimeout time.Duration
	// RedisFailureMode is ratelimit.FailOpen or ratelimit.FailClosed
	// (--redis-failure-mode).
	RedisFailureMode string
	// LogDecisions is LogDecisionsOff, LogDecisionsDenied or
	// LogDecisionsAll (--log-decisions).
	LogDecisions string
	// GCTuning sizes GOGC to the live heap while the server runs; an
	// explicit GOGC in the environment wins (--gc-tuning, see package
	// gctune).
	GCTuning bool
	// DeadlineSweep, when positive, enforces the API port's connection
	// timeouts by one sweep every DeadlineSweep instead of a runtime timer
	// per deadline; 0 uses the timers (--deadline-sweep, see package
	// sweeper).
	DeadlineSweep time.Duration
	// KeepaliveTakeover serves each HTTP/1.1 keep-alive connection of the
	// API port, after its first request, with package keepalive's loop
	// instead of net/http's (--keepalive-takeover).
	KeepaliveTakeover bool
	// ReleaseStartupPages gives back, once the records are loaded, the
	// pages of the executable that start-up touched; those serving needs
	// come back at their first use (--release-startup-pages, see package
	// exepages).
	ReleaseStartupPages bool

	// Version is the binary's version, shown in meterr_build_info; main
	// sets it from its -ldflags "-X main.version=..." stamp. Not a flag.
	Version string
	// Commit is the binary's git commit, also in meterr_build_info; main
	// sets it from -X main.commit=... ("" falls back to Go's VCS stamp).
	Commit string

	// Clock is the time source of every decision; nil is the real clock.
	// Not a flag: tests share a fake clock with the controller.
	Clock clock.PassiveClock
}

// DefaultOptions returns the options with every flag at its default.
func DefaultOptions() Options {
	return Options{
		Listen:           DefaultListen,
		MetricsAddr:      DefaultMetricsAddr,
		RecordsNamespace: DefaultRecordsNamespace,
		ShutdownTimeout:  DefaultShutdownTimeout,
		MaxHeaderBytes:   DefaultMaxHeaderBytes,
		RedisTimeout:     ratelimit.DefaultRedisTimeout,
		RedisFailureMode: ratelimit.DefaultRedisFailureMode,
		LogDecisions:     LogDecisionsOff,
		GCTuning:         true,
		DeadlineSweep:    DefaultDeadlineSweep,

		CredentialSources:   request.DefaultSources,
		KeepaliveTakeover:   true,
		ReleaseStartupPages: true,
	}
}

// AddFlags registers the auth server's flags on fs and sets o to their
// defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", DefaultListen,
		"Address the auth API (/v1/auth/verify, /v1/auth/check, /healthz, /readyz) listens on.")
	fs.StringVar(&o.GRPCListen, "grpc-listen", "",
		"Address Envoy's ext_authz v3 gRPC service (envoy.service.auth.v3.Authorization/Check) and the gRPC health service listen on; "+
			"empty turns gRPC off. Served over TLS with --tls-cert-file.")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", DefaultMetricsAddr,
		`Address the Prometheus metrics endpoint (/metrics) listens on; "0" turns it off.`)
	fs.StringVar(&o.UsageTokenFile, "usage-token-file", "",
		"File holding the bearer token the manager presents to read each key version's last use (GET /v1/usage on the metrics port); "+
			"empty turns the report off. Must match the manager's --usage-token-file.")
	fs.StringVar(&o.RecordsNamespace, "records-namespace", DefaultRecordsNamespace,
		"Namespace holding the key-record Secrets; must match the manager's --records-namespace.")
	fs.StringVar(&o.Environment, "environment", "",
		"If set (development, staging or production), keys of any other environment are refused with environment_mismatch. Empty accepts every environment.")
	AddTrustFlags(fs, &o.TrustedProxies, &o.TrustedHops)
	o.Routes = nil
	fs.Var((*routeListFlag)(&o.Routes), "route",
		`Route rule for /v1/auth/check, repeatable: "METHOD /path/prefix=permission" (METHOD may be *, permission is read, write or admin). `+
			"The longest matching prefix wins; at equal length a rule for the method beats *. Paths match case-sensitively; "+
			"a HEAD request needs what both its HEAD and its GET rules require. "+
			"A ?permission= on the bare /v1/auth/check URL takes precedence; with neither, any valid key is enough.")
	o.CredentialSources = request.DefaultSources
	fs.Var((*sourcesFlag)(&o.CredentialSources), "credential-sources",
		`Where a request may carry its key, comma-separated: "authorization" (Authorization: Bearer <key>, the default), `+
			`"header:<Name>" (the key itself in that header, e.g. header:X-API-Key) and "query:<name>" (a query parameter; `+
			"read only from Envoy's gRPC Check, which removes it from the upstream's path: keys in URLs end up in access logs). "+
			"A request must use exactly one; a key in two is refused. An allowed forward-auth answer asks the proxy to remove the one used.")
	o.KeyHeaders = nil
	fs.Func("key-headers", `Header names besides "Authorization: Bearer" that may carry the key itself, comma-separated (e.g. X-API-Key); none by default. `+
		`The same as adding header:<Name> to --credential-sources.`, func(v string) error {
		for n := range strings.SplitSeq(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.KeyHeaders = append(o.KeyHeaders, n)
			}
		}
		return nil
	})
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", "",
		"PEM certificate (chain) to serve the auth API over TLS; needs --tls-key-file. Empty serves plain HTTP.")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", "",
		"PEM private key for --tls-cert-file.")
	fs.StringVar(&o.GRPCClientCA, "grpc-client-ca", "",
		"PEM bundle of the CAs that issue the gateways' client certificates. When set, the gRPC listener (which then needs "+
			"--tls-cert-file) accepts only callers with a client certificate (client-auth usage) verified against it, and "+
			"believes the client address such a caller states (attributes.source.address, then X-Forwarded-For as over HTTP). "+
			"Re-read when the file changes. Without it, a gRPC caller's stated address counts only when the caller's own "+
			"address is in --trusted-proxies; otherwise the caller itself is the client.")
	o.GRPCClientSANs = nil
	fs.Var((*stringListFlag)(&o.GRPCClientSANs), "grpc-client-san",
		"Comma-separated DNS names or URIs (e.g. a SPIFFE ID), repeatable: with --grpc-client-ca, a client certificate must "+
			"also name one of them, compared exactly. Empty: any certificate the bundle verifies.")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout,
		"On termination, how long in-flight requests may take to finish before connections are closed.")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 0,
		"On termination, keep serving (with /readyz failing) this long before closing the listener, so endpoints "+
			"and load balancers stop sending first; e.g. 5s in a cluster.")
	fs.IntVar(&o.MaxHeaderBytes, "max-header-bytes", DefaultMaxHeaderBytes,
		"Largest request line plus headers, in bytes; larger requests get 431 Request Header Fields Too Large.")
	fs.StringVar(&o.RedisURL, "redis-url", "",
		"Count rate limits in Redis, shared and exact across replicas: redis://[[user]:password@]host:port[/db], "+
			"redis-sentinel://[[user]:password@]host1:26379,host2:26379/mastername[?db=0], "+
			"or redis-cluster://[[user]:password@]host1:6379,host2:6379,host3:6379 (rediss, rediss-sentinel, rediss-cluster for TLS). "+
			"Empty: $MTR_REDIS_URL if set, else count in this replica's memory.")
	fs.DurationVar(&o.RedisTimeout, "redis-timeout", ratelimit.DefaultRedisTimeout,
		"Longest wait for Redis per rate-limit check (and to connect); past it --redis-failure-mode decides.")
	fs.StringVar(&o.RedisFailureMode, "redis-failure-mode", ratelimit.DefaultRedisFailureMode,
		`While Redis cannot be reached: "open" counts in this replica's memory (limits hold per replica), `+
			`"closed" refuses limited keys with 503 rate_limit_unavailable and Retry-After: 1. `+
			`A background probe pings Redis every second meanwhile, and counting moves back to Redis once it answers.`)
	fs.StringVar(&o.LogDecisions, "log-decisions", LogDecisionsOff,
		`Log one structured line per decision: "off", "denied" (refusals only) or "all". A line has the outcome code, `+
			"the key id and owner when known, the client address used for the allowlist, the TCP peer, X-Forwarded-For as received, "+
			"the Origin/Referer host, the (original) method and path and the required permission; never the key. "+
			"At most 100 lines a second (bursts of 200); the rest are counted in meterr_auth_decision_logs_dropped_total.")
	fs.BoolVar(&o.GCTuning, "gc-tuning", true,
		"Set the garbage collector's headroom (GOGC) from the live heap after every collection: a quarter of the live heap, "+
			"at least 4 MiB (GOGC between 25 and 400). An explicit GOGC in the environment wins. false keeps Go's default.")
	fs.BoolVar(&o.ReleaseStartupPages, "release-startup-pages", true,
		"Once the key records are loaded, give back the pages of the executable that start-up touched (package initialisation, "+
			"the first list): the kernel maps again, at their first use, those that serving needs. Linux only. false keeps them.")
	fs.DurationVar(&o.DeadlineSweep, "deadline-sweep", DefaultDeadlineSweep,
		"Enforce the auth API's connection timeouts by one sweep at this interval instead of a timer per deadline "+
			"(cheaper; a timeout fires at most this late). 0 uses a timer per deadline. At most 1s.")
	fs.BoolVar(&o.KeepaliveTakeover, "keepalive-takeover", true,
		"After net/http has answered the first request of an HTTP/1.1 keep-alive connection to the auth API, serve the rest "+
			"of the connection with the auth server's own loop: net/http's parser reads every request, the same limits and "+
			"timeouts apply, and answers are written without net/http's per-request work (about a quarter of the CPU "+
			"of a verify). HTTP/2, HTTP/1.0 and a first request with a body stay with net/http. false: net/http serves everything.")
}

// Validate checks the options and reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--"+flag+": "+format, args...))
	}
	if err := validateAddr(o.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if o.MetricsAddr != "0" {
		if err := validateAddr(o.MetricsAddr); err != nil {
			bad("metrics-bind-address", `%v (use "0" to turn metrics off)`, err)
		} else if o.MetricsAddr == o.Listen {
			bad("metrics-bind-address", "%q is also the --listen address", o.MetricsAddr)
		}
	} else if o.UsageTokenFile != "" {
		bad("usage-token-file", "the usage report is served on the metrics port, which --metrics-bind-address=0 turns off")
	}
	if o.GRPCListen != "" {
		if err := validateAddr(o.GRPCListen); err != nil {
			bad("grpc-listen", `%v (leave it empty to turn gRPC off)`, err)
		} else if o.GRPCListen == o.Listen || o.GRPCListen == o.MetricsAddr {
			bad("grpc-listen", "%q is also the --listen or --metrics-bind-address address", o.GRPCListen)
		}
	}
	if msgs := validation.IsDNS1123Label(o.RecordsNamespace); len(msgs) > 0 {
		bad("records-namespace", "%q is not a namespace name: %s", o.RecordsNamespace, strings.Join(msgs, "; "))
	}
	if err := validateEnvironment(o.Environment); err != nil {
		bad("environment", "%v", err)
	}
	if err := validateTrustedHops(o.TrustedProxies, o.TrustedHops); err != nil {
		bad("trusted-hops", "%v", err)
	}
	if _, err := request.CompileRoutes(o.Routes); err != nil {
		bad("route", "%v", err)
	}
	if _, err := o.CredentialSources.WithHeaders(o.KeyHeaders); err != nil {
		bad("key-headers", "%v", err)
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		bad("tls-cert-file", "--tls-cert-file and --tls-key-file go together; give both or neither")
	}
	switch {
	case o.GRPCClientCA != "" && o.TLSCertFile == "":
		bad("grpc-client-ca", "needs --tls-cert-file and --tls-key-file: client certificates are asked for over TLS")
	case o.GRPCClientCA != "" && o.GRPCListen == "":
		bad("grpc-client-ca", "needs --grpc-listen: it secures the gRPC listener only")
	case o.GRPCClientCA == "" && len(o.GRPCClientSANs) > 0:
		bad("grpc-client-san", "needs --grpc-client-ca: names are checked on verified client certificates only")
	}
	for _, n := range o.GRPCClientSANs {
		if n == "" || strings.ContainsAny(n, "* \t,") {
			bad("grpc-client-san", "%q is not a DNS name or URI to compare exactly (no wildcards, spaces or commas)", n)
		}
	}
	if o.ShutdownDelay < 0 {
		bad("shutdown-delay", "must not be negative, got %s", o.ShutdownDelay)
	}
	if o.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "must be positive, got %s", o.ShutdownTimeout)
	}
	if o.RedisTimeout <= 0 {
		bad("redis-timeout", "must be positive, got %s", o.RedisTimeout)
	}
	if o.RedisFailureMode != ratelimit.FailOpen && o.RedisFailureMode != ratelimit.FailClosed {
		bad("redis-failure-mode", "must be %q or %q, got %q", ratelimit.FailOpen, ratelimit.FailClosed, o.RedisFailureMode)
	}
	if o.RedisURL != "" {
		// The error never repeats the URL: it may hold a password.
		if err := ratelimit.ValidateRedisURL(o.RedisURL); err != nil {
			bad("redis-url", "%v", err)
		}
	}
	if err := answer.ValidateLogDecisions(o.LogDecisions); err != nil {
		bad("log-decisions", "%v", err)
	}
	if o.DeadlineSweep < 0 || o.DeadlineSweep > maxDeadlineSweep {
		bad("deadline-sweep", "must be between 0 (off) and %s, got %s", maxDeadlineSweep, o.DeadlineSweep)
	}
	if o.MaxHeaderBytes < minMaxHeaderBytes {
		bad("max-header-bytes", "must be at least %d, got %d", minMaxHeaderBytes, o.MaxHeaderBytes)
	}
	return errors.Join(errs...)
}

// AddTrustFlags registers the flags of the one trust rule (request.Trust.ClientAddr)
// on fs: --trusted-proxies and --trusted-hops. The auth server and whois
// register the same set, so whois cannot explain an answer the server would
// not give.
func AddTrustFlags(fs *flag.FlagSet, proxies *[]netip.Prefix, hops *int) {
	*proxies = nil
	fs.Var((*prefixListFlag)(proxies), "trusted-proxies",
		"Comma-separated CIDRs (or addresses) of proxies in front of the auth server. When the TCP peer is one of them, "+
			"the client IP is the right-most X-Forwarded-For address that is not; otherwise X-Forwarded-For is ignored.")
	fs.IntVar(hops, "trusted-hops", 0,
		"If positive, and the TCP peer is in --trusted-proxies, the client IP is the N-th X-Forwarded-For address from the right "+
			"(1: the address the peer saw), whatever the addresses: for a fixed chain of proxies whose addresses are not known "+
			"in advance. 0 uses --trusted-proxies alone.")
}

// ValidateTrustFlags checks what AddTrustFlags read.
func ValidateTrustFlags(proxies []netip.Prefix, hops int) error {
	if err := validateTrustedHops(proxies, hops); err != nil {
		return fmt.Errorf("--trusted-hops: %w", err)
	}
	return nil
}

func validateTrustedHops(proxies []netip.Prefix, hops int) error {
	switch {
	case hops < 0 || hops > maxTrustedHops:
		return fmt.Errorf("must be between 0 and %d, got %d", maxTrustedHops, hops)
	case hops > 0 && len(proxies) == 0:
		return errors.New("needs --trusted-proxies: X-Forwarded-For is read only from a trusted peer")
	}
	return nil
}

// maxTrustedHops bounds --trusted-hops.
const maxTrustedHops = 16

// minMaxHeaderBytes leaves room for net/http's own 4096-byte allowance
// (see newHTTPServer) and a real request's headers.
const minMaxHeaderBytes = 8 << 10

func validateAddr(addr string) error {
	if addr == "" {
		return errors.New("address is empty")
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("%q is not host:port", addr)
	}
	return nil
}

func validateEnvironment(env string) error {
	switch env {
	case "", apikey.EnvDevelopment, apikey.EnvStaging, apikey.EnvProduction:
		return nil
	}
	return fmt.Errorf("environment %q is not development, staging or production", env)
}

// sourcesFlag is the flag.Value of --credential-sources.
type sourcesFlag request.Sources

func (f *sourcesFlag) String() string {
	if f == nil || *f == nil {
		return request.DefaultSources.String()
	}
	return request.Sources(*f).String()
}

func (f *sourcesFlag) Set(v string) error {
	ss, err := request.ParseSources(v)
	if err != nil {
		return err
	}
	*f = sourcesFlag(ss)
	return nil
}

// RouteListFlag is a flag.Value for --route rules appended to *routes, as
// the auth server reads them; whois takes the same flags.
func RouteListFlag(routes *[]Route) flag.Value { return (*routeListFlag)(routes) }

// PrefixListFlag is a flag.Value for a --trusted-proxies list appended to
// *prefixes, as the auth server reads it.
func PrefixListFlag(prefixes *[]netip.Prefix) flag.Value { return (*prefixListFlag)(prefixes) }

// prefixListFlag is --trusted-proxies: a comma-separated list, which may
// also be given several times.
type prefixListFlag []netip.Prefix

func (f *prefixListFlag) String() string {
	if f == nil {
		return ""
	}
	s := make([]string, len(*f))
	for i, p := range *f {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (f *prefixListFlag) Set(v string) error {
	ps, err := request.ParseTrustedProxies(v)
	if err != nil {
		return err
	}
	*f = append(*f, ps...)
	return nil
}

// routeListFlag is --route, repeatable.
type routeListFlag []Route

func (f *routeListFlag) String() string {
	if f == nil {
		return ""
	}
	s := make([]string, len(*f))
	for i, r := range *f {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func (f *routeListFlag) Set(v string) error {
	r, err := request.ParseRoute(v)
	if err != nil {
		return err
	}
	*f = append(*f, r)
	return nil
}

// stringListFlag is a comma-separated list, which may be repeated; empty
// elements are dropped.
type stringListFlag []string

func (f *stringListFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(*f, ",")
}

func (f *stringListFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*f = append(*f, s)
		}
	}
	return nil
}

// credentialSources are --credential-sources with a header source for each
// of --key-headers (Validate has checked they combine).
func (o *Options) credentialSources() request.Sources {
	ss := o.CredentialSources
	if ss == nil {
		ss = request.DefaultSources
	}
	if out, err := ss.WithHeaders(o.KeyHeaders); err == nil {
		return out
	}
	return ss
}
