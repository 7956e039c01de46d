package webhookserver

import "github.com/meterr/meterr-operator/webhookserver/authz"

// bearerToken returns the token of the request's only Authorization header,
// "Bearer <token>": the scheme in any case, one or more spaces, then exactly
// one token. Several Authorization headers are refused, as ambiguous.
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	return authz.BearerToken(values[0])
}
