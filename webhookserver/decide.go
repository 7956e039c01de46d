package webhookserver

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// DecisionInput is what a decision depends on, as plain facts: every
// front-end (HTTP verify, HTTP forward-auth, Envoy ext_authz over gRPC) works
// these out of its own request, calls Decide and renders the Decision it gets.
type DecisionInput struct {
	// Credential is the request's Authorization header value, "Bearer <key>";
	// "" when there is none, or when there are several (ambiguous).
	Credential string
	// ClientIP is the client address the IP allowlist is checked against,
	// already resolved through the trusted proxies; invalid means unknown.
	ClientIP netip.Addr
	// OriginHost is the host of Origin, else of Referer (see requestHost);
	// "" when there is none.
	OriginHost string
	// Required is the permission the request needs: from ?permission=, a
	// context extension or the route rules on the original method and path.
	Required Permission
	// Now is the time of the decision.
	Now time.Time
}

// resolve fills ClientIP and OriginHost from the HTTP request r, if any:
// only decisions that need them (a key with IP or domain restrictions) pay
// for parsing the peer address and the headers, which on every request cost
// the verify path a fifth.
func (s *Server) resolve(in *DecisionInput, r *http.Request) {
	if r != nil {
		in.ClientIP = clientIPHops(r.RemoteAddr, r.Header["X-Forwarded-For"], s.trusted, s.hops)
		in.OriginHost = requestHost(r.Header)
	}
}

// Permission is a set of permissions (read, write, admin) as a bitmask.
type Permission = permission

// ParsePermissions reads a comma-separated list of permission names ("read",
// "write,admin"); every one named is required. ok is false when a name is
// empty or unknown.
func ParsePermissions(s string) (need Permission, ok bool) {
	for name := range strings.SplitSeq(s, ",") {
		p, known := parsePermission(strings.TrimSpace(name))
		if !known {
			return 0, false
		}
		need |= p
	}
	return need, true
}

// rateState says what a Decision knows of the key's hourly count.
type rateState uint8

// The zero rateState: no rate-limit headers (unknown key, unlimited key, or
// a refusal before the count was looked at).
const (
	// rateCounted: the count and its window are known.
	rateCounted rateState = iota + 1
	// rateUnknown: the key is limited but the shared count could not be
	// reached and the limiter fails closed.
	rateUnknown
)

// Decision is the outcome of Decide: allowed, or the error code with its
// HTTP status and message; the key's identity once it authenticated; and
// where the key stands against its hourly limit. A Decision holds strings of
// the index: render it within the request and keep none of it.
type Decision struct {
	code code
	// body is the error answer; nil when allowed and for ip_not_allowed,
	// whose body names the address (AppendBody builds it).
	body []byte
	// KeyID is the authenticated key version's id; "" before that.
	KeyID string
	// policy is the key's, valid once the key authenticated (KeyID != "").
	policy Policy
	// clientIP is the address an ip_not_allowed refusal names.
	clientIP netip.Addr
	// Required is the permission the request needed.
	Required Permission

	rate      rateState
	remaining int64
	window    *windowText
	// resetIn is the number of seconds until the window ends (at least 1):
	// the RateLimit t= value and, on a 429, Retry-After.
	resetIn    int64
	retryAfter bool
}

// Allowed reports whether the request may go on.
func (d *Decision) Allowed() bool { return d.code == codeOK }

// Code is the error code of a refusal ("invalid_api_key", ...) or "ok".
func (d *Decision) Code() string { return d.code.String() }

// Type is the error type of a refusal ("authentication_error", ...); "" when
// allowed.
func (d *Decision) Type() string { return codes[d.code].typ }

// Status is the HTTP status of the answer: 200 when allowed.
func (d *Decision) Status() int { return codes[d.code].status }

// Authenticated reports whether the key was found valid (whatever came
// after): the identity accessors answer only then.
func (d *Decision) Authenticated() bool { return d.KeyID != "" }

// Owner is the key's MeterrAPIKey as namespace/name.
func (d *Decision) Owner() string {
	if !d.Authenticated() {
		return ""
	}
	return d.policy.Owner()
}

// PermissionsHeader is the key's permissions as the X-Meterr-Permissions
// value (comma-separated).
func (d *Decision) PermissionsHeader() string {
	if !d.Authenticated() || len(d.policy.hPermissions) == 0 {
		return ""
	}
	return d.policy.hPermissions[0]
}

// Environment is the key's environment.
func (d *Decision) Environment() string {
	if !d.Authenticated() {
		return ""
	}
	return d.policy.environment
}

// RetryAfter is the Retry-After value in seconds of a refusal that has one
// (429, 503), else 0.
func (d *Decision) RetryAfter() int64 {
	switch {
	case d.code == codeNotReady || d.rate == rateUnknown:
		return 1
	case d.rate == rateCounted && d.retryAfter:
		return d.resetIn
	}
	return 0
}

// AppendBody appends the error answer of a refusal, in the seed's shape
// {"error":{"type":...,"message":...,"code":...}}; nothing when allowed.
func (d *Decision) AppendBody(b []byte) []byte {
	if d.code == codeIPNotAllowed {
		return appendIPNotAllowed(b, d.clientIP)
	}
	return append(b, d.body...)
}

// Header is one header of an answer.
type Header struct{ Name, Value string }

// AppendHeaders appends the headers of the answer besides Content-Type and
// the other headers every answer has: WWW-Authenticate, Retry-After, the
// rate-limit headers and, for an allowed forward-auth request (identity),
// the X-Meterr-* identity headers. Names are in canonical HTTP form. It
// allocates; the HTTP front-end sets the same headers without (see
// writeDecision), and tests hold the two to the same list.
func (d *Decision) AppendHeaders(hs []Header, identity bool) []Header {
	switch d.code {
	case codeInvalidAPIKey, codeExpiredAPIKey:
		hs = append(hs, Header{"Www-Authenticate", hvBearer[0]})
	case codeNotReady:
		hs = append(hs, Header{"Retry-After", hvRetryOneSecond[0]})
	}
	p := &d.policy
	switch d.rate {
	case rateCounted:
		rem := strconv.FormatInt(d.remaining, 10)
		hs = append(hs,
			Header{"X-Ratelimit-Limit", p.hLimit[0]},
			Header{"X-Ratelimit-Remaining", rem},
			Header{"X-Ratelimit-Reset", d.window.hReset[0]},
			Header{"Ratelimit-Policy", p.hPolicy[0]},
			Header{"Ratelimit", `"hourly";r=` + rem + ";t=" + strconv.FormatInt(d.resetIn, 10)})
		if d.retryAfter {
			hs = append(hs, Header{"Retry-After", strconv.FormatInt(d.resetIn, 10)})
		}
	case rateUnknown:
		hs = append(hs,
			Header{"X-Ratelimit-Limit", p.hLimit[0]},
			Header{"Ratelimit-Policy", p.hPolicy[0]},
			Header{"Retry-After", hvRetryOneSecond[0]})
	}
	if identity && d.code == codeOK {
		hs = append(hs,
			Header{"X-Meterr-Key-Id", d.KeyID},
			Header{"X-Meterr-Key-Name", p.Owner()},
			Header{"X-Meterr-Permissions", d.PermissionsHeader()},
			Header{"X-Meterr-Environment", p.environment})
	}
	return hs
}

// invalidRequest is the Decision refusing a malformed request with body.
func invalidRequest(body []byte, need permission) Decision {
	return Decision{code: codeInvalidRequest, body: body, Required: need}
}

// Decide decides a request: authenticate (401), restrictions (403, not
// counted), hourly limit (429), permission (403, counted). ctx bounds the
// rate limiter's work (a shared limiter talks to Redis); everything else is a
// function of in and the key records.
func (s *Server) Decide(ctx context.Context, in DecisionInput) (d Decision) {
	return s.decideFrom(ctx, in, nil)
}

// decideFrom is Decide; with r set, ClientIP and OriginHost are worked out
// from r when the key's restrictions need them (see resolve).
func (s *Server) decideFrom(ctx context.Context, in DecisionInput, r *http.Request) (d Decision) {
	d.Required = in.Required
	if !s.loaded.Load() {
		d.code, d.body = codeNotReady, bodyNotLoaded
		return d
	}
	tok, ok := bearerTokenValue(in.Credential)
	// Shape and checksum first: a malformed key costs no hash and no lookup.
	if !ok || apikey.Parse(tok) != nil {
		d.code, d.body = codeInvalidAPIKey, bodyInvalidAPIKey
		return d
	}
	e, ok := s.index.Lookup(apikey.HashOf(tok))
	// A disabled key gets exactly the answer of an unknown one.
	if !ok || e.Policy.disabled {
		d.code, d.body = codeInvalidAPIKey, bodyInvalidAPIKey
		return d
	}
	if e.expired(in.Now) {
		d.code, d.body = codeExpiredAPIKey, bodyExpiredAPIKey
		return d
	}
	d.KeyID, d.policy = e.KeyID, e.Policy
	p := &d.policy
	now := in.Now

	if c, body := s.restrict(&in, p, r); c != codeOK {
		// Not counted, so a stolen key used from elsewhere cannot exhaust
		// the quota; the headers show where the key stands.
		if p.limit > 0 {
			if remaining, reset := s.limiter.Peek(ctx, p.LimitID(), p.limit, now); !reset.IsZero() {
				d.counted(remaining, s.windows.of(reset), now, false)
			}
		}
		d.code, d.body, d.clientIP = c, body, in.ClientIP
		return d
	}

	if p.limit > 0 {
		n, reset, ok := s.limiter.Take(ctx, p.LimitID(), p.limit, now)
		if !ok && reset.IsZero() {
			// The shared count is unreachable and the limiter fails closed:
			// the limit is known, the count is not. A 503 the client
			// retries, never a 429: nothing says the key is over its limit.
			d.rate = rateUnknown
			d.code, d.body = codeRateLimitUnavailable, bodyLimitUnavailable
			return d
		}
		d.counted(n, s.windows.of(reset), now, !ok)
		if !ok {
			d.code, d.body = codeRateLimitExceeded, bodyRateLimited
			return d
		}
	}

	if need := in.Required; need != 0 && !p.perms.grants(need) {
		d.code, d.body = codeInsufficientPermissions, bodyInsufficient[need]
		return d
	}
	d.code = codeOK
	return d
}

func (d *Decision) counted(remaining int64, w *windowText, now time.Time, retryAfter bool) {
	d.rate, d.remaining, d.window = rateCounted, remaining, w
	d.resetIn = max(w.unix-now.Unix(), 1)
	d.retryAfter = retryAfter
}

// restrict applies the key's restrictions in order: environment, client IP,
// domain. An IP refusal has no body but the address it saw (see
// appendIPNotAllowed).
func (s *Server) restrict(in *DecisionInput, p *Policy, r *http.Request) (code, []byte) {
	if s.env != "" && p.environment != s.env {
		return codeEnvironmentMismatch, s.envMismatchBody
	}
	if p.ipRestricted || p.domainRestricted {
		s.resolve(in, r)
	}
	if p.ipRestricted && !p.allowsIP(in.ClientIP) {
		return codeIPNotAllowed, nil
	}
	if p.domainRestricted && !p.allowsHost(in.OriginHost) {
		return codeDomainNotAllowed, bodyDomainNotAllowed
	}
	return codeOK, nil
}
