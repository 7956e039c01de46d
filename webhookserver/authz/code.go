package authz

import "net/http"

// Code is the outcome of a decision: "ok" or the error code of the answer,
// as DESIGN.md's error table lists them. Its name is also the label of
// meterr_auth_decisions_total.
type Code uint8

// The outcomes. Decide returns those about a key; the front-ends use
// InvalidRequest (a request they cannot read) and NotReady (asked before the
// key records were loaded) themselves.
const (
	OK Code = iota
	InvalidAPIKey
	ExpiredAPIKey
	InsufficientPermissions
	IPNotAllowed
	DomainNotAllowed
	EnvironmentMismatch
	RateLimitExceeded
	InvalidRequest
	// NotReady answers decisions asked for before the first full load of
	// key records: a 503 the client retries, never a wrong 401.
	NotReady
	// RateLimitUnavailable answers limited keys while a shared limiter
	// cannot reach its store and fails closed: a 503 the client retries,
	// never a 429 (nothing says the key is over its limit).
	RateLimitUnavailable
	// NumCodes is the number of codes, for tables indexed by Code.
	NumCodes
)

var codes = [NumCodes]struct {
	name   string
	typ    string
	status int
}{
	OK:                      {"ok", "", http.StatusOK},
	InvalidAPIKey:           {"invalid_api_key", "authentication_error", http.StatusUnauthorized},
	ExpiredAPIKey:           {"expired_api_key", "authentication_error", http.StatusUnauthorized},
	InsufficientPermissions: {"insufficient_permissions", "permission_error", http.StatusForbidden},
	IPNotAllowed:            {"ip_not_allowed", "permission_error", http.StatusForbidden},
	DomainNotAllowed:        {"domain_not_allowed", "permission_error", http.StatusForbidden},
	EnvironmentMismatch:     {"environment_mismatch", "permission_error", http.StatusForbidden},
	RateLimitExceeded:       {"rate_limit_exceeded", "rate_limit_error", http.StatusTooManyRequests},
	InvalidRequest:          {"invalid_request", "invalid_request_error", http.StatusBadRequest},
	NotReady:                {"not_ready", "api_error", http.StatusServiceUnavailable},
	RateLimitUnavailable:    {"rate_limit_unavailable", "api_error", http.StatusServiceUnavailable},
}

// String is the error code ("invalid_api_key", ...), "ok" when allowed.
func (c Code) String() string { return codes[c].name }

// Type is the error type ("authentication_error", ...); "" for OK.
func (c Code) Type() string { return codes[c].typ }

// Status is the HTTP status of the answer: 200 for OK.
func (c Code) Status() int { return codes[c].status }
