package webhookserver

import (
	"bytes"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"
)

// code is the outcome of a decision; its name is the error code of the answer
// and the label of meterr_auth_decisions_total.
type code uint8

const (
	codeOK code = iota
	codeInvalidAPIKey
	codeExpiredAPIKey
	codeInsufficientPermissions
	codeIPNotAllowed
	codeDomainNotAllowed
	codeEnvironmentMismatch
	codeRateLimitExceeded
	codeInvalidRequest
	// codeNotReady answers decisions asked for before the first full load of
	// key records: a 503 the client retries, never a wrong 401.
	codeNotReady
	// codeRateLimitUnavailable answers limited keys while the shared
	// limiter cannot reach Redis and fails closed: a 503 the client
	// retries, never a 429 (nothing says the key is over its limit).
	codeRateLimitUnavailable
	numCodes
)

var codes = [numCodes]struct {
	name   string
	typ    string
	status int
}{
	codeOK:                      {"ok", "", http.StatusOK},
	codeInvalidAPIKey:           {"invalid_api_key", "authentication_error", http.StatusUnauthorized},
	codeExpiredAPIKey:           {"expired_api_key", "authentication_error", http.StatusUnauthorized},
	codeInsufficientPermissions: {"insufficient_permissions", "permission_error", http.StatusForbidden},
	codeIPNotAllowed:            {"ip_not_allowed", "permission_error", http.StatusForbidden},
	codeDomainNotAllowed:        {"domain_not_allowed", "permission_error", http.StatusForbidden},
	codeEnvironmentMismatch:     {"environment_mismatch", "permission_error", http.StatusForbidden},
	codeRateLimitExceeded:       {"rate_limit_exceeded", "rate_limit_error", http.StatusTooManyRequests},
	codeInvalidRequest:          {"invalid_request", "invalid_request_error", http.StatusBadRequest},
	codeNotReady:                {"not_ready", "api_error", http.StatusServiceUnavailable},
	codeRateLimitUnavailable:    {"rate_limit_unavailable", "api_error", http.StatusServiceUnavailable},
}

func (c code) String() string { return codes[c].name }

// Error answers, built once. None of them depends on the request, so none can
// echo a key.
var (
	bodyInvalidAPIKey    = errorBody(codeInvalidAPIKey, "Invalid API key provided")
	bodyExpiredAPIKey    = errorBody(codeExpiredAPIKey, "API key has expired")
	bodyDomainNotAllowed = errorBody(codeDomainNotAllowed, "Requests from this domain are not allowed for this API key")
	bodyRateLimited      = errorBody(codeRateLimitExceeded, "Rate limit exceeded; retry after the time in Retry-After")
	bodyLimitUnavailable = errorBody(codeRateLimitUnavailable, "The rate limit could not be checked; retry after the time in Retry-After")
	bodyUnknownPerm      = errorBody(codeInvalidRequest, "Unknown permission in the permission parameter; use read, write or admin")
	bodyBadOriginal      = errorBody(codeInvalidRequest, "The original request URI forwarded by the proxy is malformed")
	bodyNoOriginal       = errorBody(codeInvalidRequest, "Route rules are configured but the request does not say which request it authorizes: "+
		"append the original path to /v1/auth/check or send X-Forwarded-Uri, X-Original-URL or X-Original-URI")
	bodyNotFound         = errorBody(codeInvalidRequest, "Not found; the endpoints are /v1/auth/verify and /v1/auth/check")
	bodyMethodNotAllowed = errorBody(codeInvalidRequest, "Method not allowed; /v1/auth/verify takes GET or HEAD")
	bodyNotLoaded        = errorBody(codeNotReady, "The auth server has not loaded the key records yet; retry after the time in Retry-After")
	bodyInsufficient     = func() (b [permAdmin << 1][]byte) {
		for m := range b {
			b[m] = errorBody(codeInsufficientPermissions,
				"API key lacks the required permission: "+permission(m).String())
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
	b := errorBody(codeIPNotAllowed, "API key not allowed from "+mark)
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
	return errorBody(codeEnvironmentMismatch, "API key is not valid in this environment; this server accepts "+env+" keys")
}

func errorBody(c code, message string) []byte {
	b := append([]byte(nil), `{"error":{"type":`...)
	b = appendJSONString(b, codes[c].typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, codes[c].name)
	return append(b, "}}\n"...)
}

// appendOKTail appends the part of a 200 answer after the key id, up to
// `"rate_limit":`.
func appendOKTail(b []byte, c *policyClass) []byte {
	b = append(b, `,"permissions":[`...)
	for i, p := range c.permissions {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, p)
	}
	b = append(b, `],"environment":`...)
	b = appendJSONString(b, c.environment)
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
	_, _ = w.Write(body)
}

// setRateLimitHeaders sets the GitHub-style X-RateLimit-* headers and the
// IETF draft's RateLimit-Policy and RateLimit, and Retry-After on a 429. The
// values that change per request are cut from one string in a, formatted
// once; it returns the remaining count's text for the answer's body.
func setRateLimitHeaders(h http.Header, a *answerValues, p *Policy, remaining int64, w *windowText, secs int64, retryAfter bool) string {
	b := append(a.buf[:0], `"hourly";r=`...)
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
	h["X-Ratelimit-Limit"] = p.hLimit
	h["X-Ratelimit-Remaining"] = a.v[1:2:2]
	h["X-Ratelimit-Reset"] = w.hReset
	h["Ratelimit-Policy"] = p.hPolicy
	h["Ratelimit"] = a.v[0:1:1]
	if retryAfter {
		h["Retry-After"] = a.v[2:3:3]
	}
	return a.v[1]
}

// answerValues backs a request's own header values (rate-limit counters, a
// check's key id and owner), so that they cost one allocation; the header map
// keeps it alive until net/http has written the answer. buf is written once,
// before any string is cut from it, and never again.
type answerValues struct {
	v   [3]string
	id  [2]string
	buf [64]byte
}
