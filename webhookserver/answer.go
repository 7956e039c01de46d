package webhookserver

import (
	"context"
	"strconv"
	"time"
	"unsafe"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Answer is the one answer to a Request, which every front-end renders its
// own way (HTTP: Server.writeHTTP; NGINX's auth_request: Server.writeNginx;
// Envoy's Check: Server.checkAnswer): the decision, its status and error
// code; the headers to add (eachHeader) and to remove (remove); the body
// (appendBody); and the rate-limit state. It holds strings of the index:
// render it within the request and keep none of it.
type Answer struct {
	authz.Decision
	// identity: an allowed answer carries the X-Meterr-* identity headers
	// and asks the proxy to remove the key (forward-auth endpoints).
	identity bool
	// body is the error body, when it does not depend on the request
	// (every refusal but ip_not_allowed), or the front-end's own refusal.
	body []byte
	// text is the rendering of the key's policy class, once it
	// authenticated; win the window's end, once counted.
	text *classText
	win  *windowText
	// vals backs this answer's own header values (counts, key id, owner).
	vals *answerValues
}

// decide answers req: it looks the key up, decides (authz.Decider.Decide),
// counts and observes the decision (metrics, decision log), once for every
// front-end. now is when the front-end received the request.
func (s *Server) decide(ctx context.Context, req *Request, now time.Time) (a Answer) {
	var in authz.Input
	looked := false
	switch {
	case req.Refusal != nil:
		a.Decision = authz.Decision{Code: authz.InvalidRequest}
	case !s.loaded.Load():
		// Before the first full load of records: a 503 the client retries,
		// never a 401 for a key that has not been loaded yet.
		a.Decision = authz.Decision{Code: authz.NotReady, Required: req.Required}
	default:
		in = authz.Input{Required: req.Required, Now: now}
		// Shape and checksum first: a malformed key costs no hash and no
		// lookup.
		if tok, ok := authz.BearerToken(req.Credential); ok && apikey.Parse(tok) == nil {
			in.Entry, in.Found = s.index.Lookup(apikey.HashOf(tok))
		} else if req.known != nil {
			in.Entry, in.Found = *req.known, true
		}
		looked = true
		if in.NeedsClient() {
			in.ClientIP = s.client(req)
			in.OriginHost = req.Headers.originHost()
		}
		a.Decision = s.decider.Decide(ctx, &in)
	}
	s.complete(&a, req.Endpoint != EndpointVerify, req.Refusal)
	s.metrics.decisions[a.Code].Inc()
	s.metrics.duration.Observe(s.clock.Since(now).Seconds())
	if s.dlog != nil {
		s.logDecision(req, &a, &in, looked)
	}
	return a
}

// answerOf is the Answer of a decision made: identity for a forward-auth
// endpoint, refusal the front-end's own body (invalid_request).
func (s *Server) answerOf(d *authz.Decision, identity bool, refusal []byte) Answer {
	a := Answer{Decision: *d}
	s.complete(&a, identity, refusal)
	return a
}

// complete works out what a's renderings show of its decision: the body of
// a refusal, the texts of the key's class and window, and the answer's own
// header values, formatted once for every rendering.
func (s *Server) complete(a *Answer, identity bool, refusal []byte) {
	d := &a.Decision
	a.identity = identity
	if a.body = refusal; a.body == nil {
		a.body = s.bodyOf(d)
	}
	if d.Authenticated() {
		a.text = textOf(&d.Policy)
	}
	okIdentity := identity && d.Code == authz.OK
	if d.Rate != authz.RateCounted && !okIdentity {
		return
	}
	a.vals = new(answerValues)
	if d.Rate == authz.RateCounted {
		a.win = s.windows.of(d.Reset)
		a.vals.counts(d.Policy.Limit().Window, d.Remaining, d.ResetIn)
	}
	if okIdentity {
		a.vals.id = [2]string{d.KeyID, d.Policy.Owner()}
	}
}

// eachHeader calls set with every header of the answer besides Content-Type
// and the others every answer carries, in this order: WWW-Authenticate (401)
// or Retry-After (not ready); the rate-limit headers (X-RateLimit-Limit,
// -Remaining, -Reset, RateLimit-Policy, RateLimit, and Retry-After on a 429
// or when the count is unreachable); for an allowed forward-auth request,
// the X-Meterr-* identity headers. Names are in canonical HTTP form; each
// value is one string, in a slice net/http may keep and must not modify.
func (a *Answer) eachHeader(set func(name string, v []string)) {
	switch a.Code {
	case authz.InvalidAPIKey, authz.ExpiredAPIKey:
		set("Www-Authenticate", hvBearer)
	case authz.NotReady:
		set("Retry-After", hvRetryOneSecond)
	}
	t := a.text
	switch a.Rate {
	case authz.RateCounted:
		v := a.vals
		set("X-Ratelimit-Limit", t.hLimit)
		set("X-Ratelimit-Remaining", v.v[1:2:2])
		set("X-Ratelimit-Reset", a.win.hReset)
		set("Ratelimit-Policy", t.hPolicy)
		set("Ratelimit", v.v[0:1:1])
		if a.RetryAfter() > 0 {
			set("Retry-After", v.v[2:3:3])
		}
	case authz.RateUnknown:
		set("X-Ratelimit-Limit", t.hLimit)
		set("Ratelimit-Policy", t.hPolicy)
		set("Retry-After", hvRetryOneSecond)
	}
	if a.identity && a.Code == authz.OK {
		set("X-Meterr-Key-Id", a.vals.id[0:1:1])
		set("X-Meterr-Key-Name", a.vals.id[1:2:2])
		set("X-Meterr-Permissions", t.hPermissions)
		set("X-Meterr-Environment", t.hEnvironment)
	}
}

// remove returns the request headers the proxy must remove before the
// upstream: the key, from an allowed forward-auth request; else nil.
func (a *Answer) remove() []string {
	if a.identity && a.Code == authz.OK {
		return hvAuthorization
	}
	return nil
}

// appendBody appends the answer's body: the error answer of a refusal, in
// the seed's shape {"error":{"type":...,"message":...,"code":...}}, or the
// 200 answer, built from the key id (a validated token, so it needs no
// escaping) and the class's shared fragment.
func (a *Answer) appendBody(b []byte) []byte {
	switch {
	case a.body != nil:
		return append(b, a.body...)
	case a.Code == authz.IPNotAllowed:
		return appendIPNotAllowed(b, a.ClientIP)
	case a.Code != authz.OK:
		return b
	}
	t := a.text
	b = append(b, `{"valid":true,"key_id":"`...)
	b = append(b, a.KeyID...)
	b = append(b, '"')
	b = append(b, t.okTail...)
	if a.Policy.Limit().Unlimited() {
		return append(b, `{"unlimited":true}}`+"\n"...)
	}
	return appendRateLimit(b, t.hLimit[0], a.vals.v[1], a.win)
}

// answerValues backs an answer's own header values (rate-limit counters, a
// forward-auth answer's key id and owner), so that they cost one
// allocation; the header map keeps it alive until net/http has written the
// answer. buf is written once, before any string is cut from it, and never
// again.
type answerValues struct {
	// v is the RateLimit value `"<window>";r=<remaining>;t=<seconds>`
	// ("hourly"), and the remaining count and the seconds cut from it.
	v   [3]string
	id  [2]string
	buf [64]byte
}

// counts formats the remaining count and the seconds to the window's end
// once, as one string the three values are cut from.
func (a *answerValues) counts(w quota.Window, remaining, secs int64) {
	b := append(a.buf[:0], '"')
	b = append(b, w.Name()...)
	b = append(b, `";r=`...)
	i0 := len(b)
	b = strconv.AppendInt(b, remaining, 10)
	i1 := len(b)
	b = append(b, ";t="...)
	i2 := len(b)
	b = strconv.AppendInt(b, secs, 10)
	var s string
	if len(b) <= len(a.buf) {
		s = unsafe.String(&a.buf[0], len(b)) //nolint:gosec // b was appended within a.buf, which is never written again
	} else {
		s = string(b) // cannot happen with int64 values; stay correct anyway
	}
	a.v = [3]string{s, s[i0:i1], s[i2:]}
}
