package answer

import (
	"bytes"
	"net/http"
	"net/netip"
	"sync"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// EachHeader calls set with every header of the answer besides Content-Type
// and the others every answer carries, in this order: WWW-Authenticate (401)
// or Retry-After (not ready); the rate-limit headers (X-RateLimit-Limit,
// -Remaining, -Reset, RateLimit-Policy, RateLimit, and Retry-After on a 429
// or when the count is unreachable); for an allowed forward-auth request,
// the X-Meterr-* identity headers. Names are in canonical HTTP form; each
// value is one string, in a slice net/http may keep and must not modify.
func (a *Answer) EachHeader(set func(name string, v []string)) {
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

// Remove returns the request headers the proxy must remove before the
// upstream: the key's (Authorization, or the --credential-sources header it
// came in), from an allowed forward-auth request; else nil.
func (a *Answer) Remove() []string {
	if a.identity && a.Code == authz.OK {
		return a.from.Remove()
	}
	return nil
}

// RemoveQuery returns the query parameters the proxy must remove from the
// upstream's path: the key's, when it came in one (only Envoy's gRPC
// Check reads a key there); else nil.
func (a *Answer) RemoveQuery() []string {
	if a.identity && a.Code == authz.OK {
		return a.from.RemoveQuery()
	}
	return nil
}

// AppendBody appends the answer's body: the error answer of a refusal, in
// the seed's shape {"error":{"type":...,"message":...,"code":...}}, or the
// 200 answer, built from the key id (a validated token, so it needs no
// escaping) and the class's shared fragment.
func (a *Answer) AppendBody(b []byte) []byte {
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

// The ip_not_allowed answer names the address the allowlist was checked
// against (see appendIPNotAllowed): its body is cut around that address.
var bodyIPNotAllowedHead, bodyIPNotAllowedTail = func() ([]byte, []byte) {
	const mark = "ADDRESS"
	b := ErrorBody(authz.IPNotAllowed, "API key not allowed from "+mark)
	i := bytes.Index(b, []byte(mark))
	return b[:i:i], b[i+len(mark):]
}()

// appendIPNotAllowed appends the ip_not_allowed answer, saying which address
// was seen. An address's text needs no JSON escaping.
func appendIPNotAllowed(b []byte, a netip.Addr) []byte {
	b = append(b, bodyIPNotAllowedHead...)
	if a.IsValid() {
		b = a.AppendTo(b)
	} else {
		b = append(b, "an unknown address"...)
	}
	return append(b, bodyIPNotAllowedTail...)
}

// appendRateLimit appends the rate_limit object and closes the 200 answer;
// the counts come as the header values already formatted.
func appendRateLimit(b []byte, limit, remaining string, w *windowText) []byte {
	b = append(b, `{"limit":`...)
	b = append(b, limit...)
	b = append(b, `,"remaining":`...)
	b = append(b, remaining...)
	b = append(b, `,"reset":"`...)
	b = append(b, w.rfc3339...)
	return append(b, "\"}}\n"...)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Header values shared by every answer; net/http never modifies them.
var (
	hvJSON           = []string{"application/json"}
	hvNoStore        = []string{"no-store"}
	hvNoSniff        = []string{"nosniff"}
	hvBearer         = []string{"Bearer"}
	hvRetryOneSecond = []string{"1"}
)

// Common are the headers every answer carries, as a rendering that lists
// headers lists them (WriteHTTP sets the same).
var Common = [...]struct{ Name, Value string }{
	{"Content-Type", hvJSON[0]},
	{"Cache-Control", hvNoStore[0]},
	{"X-Content-Type-Options", hvNoSniff[0]},
}

// WriteHTTP renders a as the HTTP answer: its headers, and for an allowed
// forward-auth request x-envoy-auth-headers-to-remove naming the headers
// Envoy's HTTP ext_authz removes before the upstream (the key). It
// allocates nothing beyond a's own values.
func WriteHTTP(w http.ResponseWriter, a *Answer) {
	h := w.Header()
	a.EachHeader(func(name string, v []string) { h[name] = v })
	if rm := a.Remove(); rm != nil {
		h["X-Envoy-Auth-Headers-To-Remove"] = rm
	}
	if a.body != nil {
		Write(w, a.Code.Status(), a.body)
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := a.AppendBody((*bp)[:0])
	Write(w, a.Code.Status(), b)
	*bp = b
	bufPool.Put(bp)
}

// Write sets the headers every answer carries and writes body: status and
// body are an answer's, or a front-end's own answer (/healthz).
func Write(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = hvJSON
	h["Cache-Control"] = hvNoStore
	h["X-Content-Type-Options"] = hvNoSniff
	w.WriteHeader(status)
	_, _ = w.Write(body) //nolint:gosec // G705: a JSON answer with nosniff, never HTML; it never echoes the request
}
