package answer

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// Answer is the one answer to a Request, which every front-end renders its
// own way (HTTP: WriteHTTP; NGINX's auth_request: nginx.Write; Envoy's
// Check: extauthz): the decision, its status and error code; the headers to
// add (EachHeader) and to remove (Remove); the body (AppendBody); and the
// rate-limit state. It holds strings of the index:
// render it within the request and keep none of it.
type Answer struct {
	authz.Decision
	// identity: an allowed answer carries the X-Meterr-* identity headers
	// and asks the proxy to remove the key (forward-auth endpoints).
	identity bool
	// from is the source the key came from (nil: Authorization): what an
	// allowed forward-auth answer asks the proxy to remove.
	from *request.Source
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

// complete works out what a's renderings show of its decision: the body of
// a refusal, the texts of the key's class and window, and the answer's own
// header values, formatted once for every rendering.
func (s *Core) complete(a *Answer, identity bool, refusal []byte) {
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

// Error answers, built once. None of them depends on the request, so none can
// echo a key.
var (
	bodyInvalidAPIKey    = ErrorBody(authz.InvalidAPIKey, "Invalid API key provided")
	bodyExpiredAPIKey    = ErrorBody(authz.ExpiredAPIKey, "API key has expired")
	bodyDomainNotAllowed = ErrorBody(authz.DomainNotAllowed, "Requests from this domain are not allowed for this API key")
	bodyRateLimited      = ErrorBody(authz.RateLimitExceeded, "Rate limit exceeded; retry after the time in Retry-After")
	bodyLimitUnavailable = ErrorBody(authz.RateLimitUnavailable, "The rate limit could not be checked; retry after the time in Retry-After")
	bodyNotLoaded        = ErrorBody(authz.NotReady, "The auth server has not loaded the key records yet; retry after the time in Retry-After")
	bodyInsufficient     = func() (b [authz.Admin << 1][]byte) {
		for m := range b {
			b[m] = ErrorBody(authz.InsufficientPermissions,
				"API key lacks the required permission: "+authz.Permission(m).String())
		}
		return b
	}()
)

func environmentMismatchBody(env string) []byte {
	return ErrorBody(authz.EnvironmentMismatch, "API key is not valid in this environment; this server accepts "+env+" keys")
}

// ErrorBody is the error answer of code c with message, in the seed's shape
// {"error":{"type":...,"message":...,"code":...}}. A front-end makes the
// bodies of its own refusals (invalid_request) with it, once.
func ErrorBody(c authz.Code, message string) []byte {
	b := append([]byte(nil), `{"error":{"type":`...)
	b = appendJSONString(b, c.Type())
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, c.String())
	return append(b, "}}\n"...)
}

// bodyOf returns the error answer of d's code; nil when allowed and for
// ip_not_allowed.
func (s *Core) bodyOf(d *authz.Decision) []byte {
	switch d.Code {
	case authz.InvalidAPIKey:
		return bodyInvalidAPIKey
	case authz.ExpiredAPIKey:
		return bodyExpiredAPIKey
	case authz.EnvironmentMismatch:
		return s.envMismatchBody
	case authz.DomainNotAllowed:
		return bodyDomainNotAllowed
	case authz.RateLimitExceeded:
		return bodyRateLimited
	case authz.RateLimitUnavailable:
		return bodyLimitUnavailable
	case authz.InsufficientPermissions:
		return bodyInsufficient[d.Required&(authz.Admin<<1-1)]
	case authz.NotReady:
		return bodyNotLoaded
	}
	return nil
}

// classText is what answers show of a policy class: header values shared by
// every answer and the 200 answer's fragment. It is rendered on a class's
// first answer and kept in the class's slot (authz.Class.Slot), so answers
// cost no formatting; never mutated.
type classText struct {
	hPermissions []string
	hEnvironment []string
	// hLimit and hPolicy are nil for an unlimited key.
	hLimit  []string
	hPolicy []string
	// okTail is the 200 answer after the key id, up to `"rate_limit":`.
	okTail []byte
}

// textOf returns the rendering of p's class.
func textOf(p *authz.Policy) *classText {
	slot := p.Class().Slot()
	if t, ok := slot.Load().(*classText); ok {
		return t
	}
	// Two requests may render one class at once; both renderings are equal.
	t := &classText{
		hPermissions: []string{strings.Join(p.Permissions(), ",")},
		hEnvironment: []string{p.Environment()},
		okTail:       appendOKTail(nil, p),
	}
	if l := p.Limit(); !l.Unlimited() {
		t.hLimit = []string{strconv.FormatInt(l.Count, 10)}
		t.hPolicy = []string{`"` + l.Window.Name() + `";q=` + strconv.FormatInt(l.Count, 10) + `;w=` + strconv.FormatInt(l.Window.Seconds(), 10)}
	}
	slot.Store(t)
	return t
}

// appendOKTail appends the part of a 200 answer after the key id, up to
// `"rate_limit":`.
func appendOKTail(b []byte, p *authz.Policy) []byte {
	b = append(b, `,"permissions":[`...)
	for i, name := range p.Permissions() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, name)
	}
	b = append(b, `],"environment":`...)
	b = appendJSONString(b, p.Environment())
	return append(b, `,"rate_limit":`...)
}

// windowText is the end of a rate-limit window in the two forms answers show
// it; it changes once an hour, so it is formatted once an hour.
type windowText struct {
	unix    int64
	hReset  []string // X-RateLimit-Reset: Unix seconds
	rfc3339 string   // the 200 answer's "reset"
}

// windowTexts keeps the last windowText made.
type windowTexts struct{ last atomic.Pointer[windowText] }

func (t *windowTexts) of(reset time.Time) *windowText {
	u := reset.Unix()
	if w := t.last.Load(); w != nil && w.unix == u {
		return w
	}
	w := &windowText{unix: u, hReset: []string{strconv.FormatInt(u, 10)}, rfc3339: reset.UTC().Format(time.RFC3339)}
	t.last.Store(w)
	return w
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as encoding/json
// does: quotes, backslashes, control characters, <, >, &, U+2028 and U+2029;
// invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
