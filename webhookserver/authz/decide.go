package authz

import (
	"context"
	"net/netip"
	"time"

	"github.com/meterr/meterr-operator/internal/quota"
)

// Limiter counts requests per rate-limit identity in fixed windows: the one
// interface of every limiter (ratelimit.Memory, ratelimit.Redis). id is a
// MeterrAPIKey's identity (not a key version's, so rotation does not reset
// the count): a limiter in memory counts under id.Key and never reads the
// name, one that shares counts elsewhere uses id.Name(). limit is a count
// per window, Count >= 1; the window's length and alignment are data of
// the limit (quota.Window), which the limiter applies as it finds them.
// now is the decision's time. Implementations must be safe for concurrent
// use.
type Limiter interface {
	// Take spends one request. ok is false when the window's count is
	// already used up; then nothing is spent and remaining is 0. A zero
	// reset with ok false means the count could not be checked (a shared
	// limiter failing closed): the request is refused without counters.
	Take(ctx context.Context, id quota.ID, limit quota.Limit, now time.Time) (remaining int64, reset time.Time, ok bool)
	// Peek reports the window's remaining requests without spending one; a
	// zero reset means unknown.
	Peek(ctx context.Context, id quota.ID, limit quota.Limit, now time.Time) (remaining int64, reset time.Time)
}

// Input is what a decision depends on, as plain facts: every front-end (HTTP
// verify, HTTP forward-auth, Envoy ext_authz over gRPC) works them out of its
// own request.
type Input struct {
	// Entry is what the index found for the presented key; Found is false
	// when there was no key, a malformed one or an unknown one.
	Entry Entry
	Found bool
	// ClientIP is the client address the IP allowlist is checked against,
	// already resolved through the trusted proxies; invalid means unknown.
	ClientIP netip.Addr
	// OriginHost is the host of Origin, else of Referer; "" when there is
	// none.
	OriginHost string
	// Required is the permission the request needs: from ?permission=, a
	// context extension or the route rules on the original method and path.
	Required Permission
	// Now is the time of the decision.
	Now time.Time
}

// NeedsClient reports whether the decision reads ClientIP and OriginHost:
// only for a key with IP or domain restrictions. Working them out (parsing
// the peer address, X-Forwarded-For, Origin) costs the verify path a fifth,
// so a front-end may leave them unset otherwise.
func (in *Input) NeedsClient() bool { return in.Found && in.Entry.Policy.Restricted() }

// RateState says what a Decision knows of the key's hourly count.
type RateState uint8

const (
	// RateNone: no rate-limit state to show (unknown key, unlimited key,
	// or a refusal before the count was looked at).
	RateNone RateState = iota
	// RateCounted: Remaining and Reset are known.
	RateCounted
	// RateUnknown: the key is limited but the shared count could not be
	// reached and the limiter fails closed.
	RateUnknown
)

// Decision is the outcome of Decide: allowed, or the error code; the key's
// identity once it authenticated; and where the key stands against its
// hourly limit. It renders nothing: every front-end renders the same
// Decision its own way. A Decision holds strings of the index: render it
// within the request and keep none of it.
type Decision struct {
	// Code is OK or the refusal's error code; Code.Status is the HTTP
	// status of the answer.
	Code Code
	// KeyID is the authenticated key version's id; "" before that.
	KeyID string
	// Policy is the key's, valid once the key authenticated (KeyID != "").
	Policy Policy
	// ClientIP is the address an IPNotAllowed refusal was checked against.
	ClientIP netip.Addr
	// Required is the permission the request needed.
	Required Permission

	// Rate says whether Remaining, Reset and ResetIn are set.
	Rate RateState
	// Remaining is what is left of the hourly limit.
	Remaining int64
	// Reset is when the window ends; ResetIn is the number of seconds
	// until then (at least 1): the RateLimit t= value and, on a 429,
	// Retry-After.
	Reset   time.Time
	ResetIn int64
}

// Allowed reports whether the request may go on.
func (d *Decision) Allowed() bool { return d.Code == OK }

// Authenticated reports whether the key was found valid (whatever came
// after): KeyID and Policy are set only then.
func (d *Decision) Authenticated() bool { return d.KeyID != "" }

// RetryAfter is the Retry-After value in seconds of a refusal that has one
// (429, 503), else 0.
func (d *Decision) RetryAfter() int64 {
	switch {
	case d.Code == NotReady || d.Rate == RateUnknown:
		return 1
	case d.Rate == RateCounted && d.Code == RateLimitExceeded:
		return d.ResetIn
	}
	return 0
}

// Decider decides requests for one auth server.
type Decider struct {
	// Environment, when set, refuses keys of any other environment.
	Environment string
	// Limiter counts the requests of limited keys.
	Limiter Limiter
}

// Decide decides a request: authenticate (401), restrictions (403, not
// counted), hourly limit (429), permission (403, counted). ctx bounds the
// limiter's work (a shared limiter talks to Redis); everything else is a
// function of in and the limiter's counts.
func (c *Decider) Decide(ctx context.Context, in *Input) Decision {
	// A disabled key gets exactly the answer of an unknown one. This part is
	// small enough to be inlined into the front-ends: unknown and malformed
	// keys, what an attacker sends, cost no call.
	if !in.Found || in.Entry.Policy.Disabled() {
		return Decision{Code: InvalidAPIKey, Required: in.Required}
	}
	return c.decide(ctx, in)
}

// decide is Decide for a key the index found and that is not disabled.
func (c *Decider) decide(ctx context.Context, in *Input) (d Decision) {
	d.Required = in.Required
	e := &in.Entry
	if e.expired(in.Now) {
		d.Code = ExpiredAPIKey
		return d
	}
	d.KeyID, d.Policy = e.KeyID, e.Policy
	p := &d.Policy
	limit := p.class.limit
	limited := !limit.Unlimited()
	now := in.Now

	if code := c.restrict(in, p.class); code != OK {
		// Not counted, so a stolen key used from elsewhere cannot exhaust
		// the quota; the rate-limit state shows where the key stands.
		if limited {
			if remaining, reset := c.Limiter.Peek(ctx, p.QuotaID(), limit, now); !reset.IsZero() {
				d.counted(remaining, reset, now)
			}
		}
		d.Code = code
		if code == IPNotAllowed {
			d.ClientIP = in.ClientIP
		}
		return d
	}

	if limited {
		n, reset, ok := c.Limiter.Take(ctx, p.QuotaID(), limit, now)
		if !ok && reset.IsZero() {
			// The shared count is unreachable and the limiter fails closed:
			// the limit is known, the count is not. A 503 the client
			// retries, never a 429: nothing says the key is over its limit.
			d.Rate, d.Code = RateUnknown, RateLimitUnavailable
			return d
		}
		d.counted(n, reset, now)
		if !ok {
			d.Code = RateLimitExceeded
			return d
		}
	}

	if need := in.Required; need != 0 && !p.class.perms.Grants(need) {
		d.Code = InsufficientPermissions
		return d
	}
	d.Code = OK
	return d
}

func (d *Decision) counted(remaining int64, reset, now time.Time) {
	d.Rate, d.Remaining, d.Reset = RateCounted, remaining, reset
	d.ResetIn = max(reset.Unix()-now.Unix(), 1)
}

// restrict applies the key's restrictions in order: environment, client IP,
// domain.
func (c *Decider) restrict(in *Input, cl *Class) Code {
	if c.Environment != "" && cl.environment != c.Environment {
		return EnvironmentMismatch
	}
	if cl.ipRestricted && !cl.allowsIP(in.ClientIP) {
		return IPNotAllowed
	}
	if cl.domainRestricted && !cl.allowsHost(in.OriginHost) {
		return DomainNotAllowed
	}
	return OK
}
