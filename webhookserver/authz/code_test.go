package authz

import "testing"

// The codes are the contract of DESIGN.md's error table.
func TestCodes(t *testing.T) {
	want := map[Code]struct {
		typ    string
		status int
	}{
		InvalidAPIKey:           {"authentication_error", 401},
		ExpiredAPIKey:           {"authentication_error", 401},
		InsufficientPermissions: {"permission_error", 403},
		IPNotAllowed:            {"permission_error", 403},
		DomainNotAllowed:        {"permission_error", 403},
		EnvironmentMismatch:     {"permission_error", 403},
		RateLimitExceeded:       {"rate_limit_error", 429},
		InvalidRequest:          {"invalid_request_error", 400},
		NotReady:                {"api_error", 503},
	}
	for c, w := range want {
		if c.Type() != w.typ || c.Status() != w.status {
			t.Errorf("%s: %s %d, want %s %d", c, c.Type(), c.Status(), w.typ, w.status)
		}
	}
	if OK.String() != "ok" || OK.Type() != "" || OK.Status() != 200 {
		t.Errorf("OK: %q %q %d", OK, OK.Type(), OK.Status())
	}
	if c := RateLimitUnavailable; c.String() != "rate_limit_unavailable" || c.Type() != "api_error" || c.Status() != 503 {
		t.Errorf("%s: %s %d", c, c.Type(), c.Status())
	}
	seen := map[string]bool{}
	for c := range NumCodes {
		if c.String() == "" || seen[c.String()] {
			t.Errorf("code %d: name %q empty or repeated", c, c)
		}
		seen[c.String()] = true
	}
}
