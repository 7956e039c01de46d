package request

import "net/http"

// Credential returns the value of the request's only Authorization header
// ("Bearer <token>", which authz.BearerToken reads), "" when there is none
// or several: several are refused as ambiguous.
func Credential(h http.Header) string {
	if v := h["Authorization"]; len(v) == 1 {
		return v[0]
	}
	return ""
}
