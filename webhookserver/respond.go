package webhookserver

import (
	"bytes"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Error answers, built once. None of them depends on the request, so none can
// echo a key.
var (
	bodyInvalidAPIKey    = errorBody(authz.InvalidAPIKey, "Invalid API key provided")
	bodyExpiredAPIKey    = errorBody(authz.ExpiredAPIKey, "API key has expired")
	bodyDomainNotAllowed = errorBody(authz.DomainNotAllowed, "Requests from this domain are not allowed for this API key")
	bodyRateLimited      = errorBody(authz.RateLimitExceeded, "Rate limit exceeded; retry after the time in Retry-After")
	bodyLimitUnavailable = errorBody(authz.RateLimitUnavailable, "The rate limit could not be checked; retry after the time in Retry-After")
	bodyUnknownPerm      = errorBody(authz.InvalidRequest, "Unknown permission in the permission parameter; use read, write or admin")
	bodyBadOriginal      = errorBody(authz.InvalidRequest, "The original request URI forwarded by the proxy is malformed")
	bodyNoOriginal       = errorBody(authz.InvalidRequest, "Route rules are configured but the request does not say which request it authorizes: "+
		"append the original path to /v1/auth/check or send X-Forwarded-Uri, X-Original-URL or X-Original-URI")
	bodyNotFound         = errorBody(authz.InvalidRequest, "Not found; the endpoints are /v1/auth/verify and /v1/auth/check")
	bodyMethodNotAllowed = errorBody(authz.InvalidRequest, "Method not allowed; /v1/auth/verify takes GET or HEAD")
	bodyNotLoaded        = errorBody(authz.NotReady, "The auth server has not loaded the key records yet; retry after the time in Retry-After")
	bodyInsufficient     = func() (b [authz.Admin << 1][]byte) {
		for m := range b {
			b[m] = errorBody(authz.InsufficientPermissions,
				"API key lacks the required permission: "+authz.Permission(m).String())
		}
		return b
	}()

	bodyHealthy  = []byte(`{"status":"ok"}` + "\n")
	bodyReady    = []byte(`{"status":"ready"}` + "\n")
	bodyNotReady = []byte(`{"status":"not ready","message":"key records have not been loaded yet"}` + "\n")
)

// The ip_not_allowed answer names the address the allowlist was checked
// against (see appendIPNotAllowed): its body is cut around that address.
var bodyIPNotAllowedHead, bodyIPNotAllowedTail = func() ([]byte, []byte) {
	const mark = "ADDRESS"
	b := errorBody(authz.IPNotAllowed, "API key not allowed from "+mark)
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

func environmentMismatchBody(env string) []byte {
	return errorBody(authz.EnvironmentMismatch, "API key is not valid in this environment; this server accepts "+env+" keys")
}

func errorBody(c authz.Code, message string) []byte {
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
func (s *Server) bodyOf(d *authz.Decision) []byte {
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

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Header values shared by every answer; net/http never modifies them.
var (
	hvJSON           = []string{"application/json"}
	hvNoStore        = []string{"no-store"}
	hvNoSniff        = []string{"nosniff"}
	hvBearer         = []string{"Bearer"}
	hvAllowVerify    = []string{"GET, HEAD"}
	hvRetryOneSecond = []string{"1"}
	hvAuthorization  = []string{"authorization"}
)

// writeAnswer sets the headers every answer carries and writes body.
func writeAnswer(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = hvJSON
	h["Cache-Control"] = hvNoStore
	h["X-Content-Type-Options"] = hvNoSniff
	w.WriteHeader(status)
	_, _ = w.Write(body) //nolint:gosec // G705: a JSON answer with nosniff, never HTML; it never echoes the request
}
