package authz

import "github.com/meterr/meterr-operator/internal/ascii"

// BearerToken returns the token of one Authorization value, "Bearer
// <token>": the scheme in any case, one or more spaces, then exactly one
// token. The credential is the first fact of a decision; every front-end
// reads it here.
func BearerToken(v string) (string, bool) {
	const scheme = "bearer"
	if len(v) <= len(scheme) || !ascii.EqualFold(v[:len(scheme)], scheme) || v[len(scheme)] != ' ' {
		return "", false
	}
	i := len(scheme)
	for i < len(v) && v[i] == ' ' {
		i++
	}
	tok := v[i:]
	if tok == "" {
		return "", false
	}
	for j := 0; j < len(tok); j++ {
		if c := tok[j]; c <= ' ' || c == 0x7f {
			return "", false
		}
	}
	return tok, true
}

// RawToken returns the token of a header or query value that holds the key
// itself (X-API-Key: <token>): exactly one token, surrounding spaces
// ignored.
func RawToken(v string) (string, bool) {
	i, j := 0, len(v)
	for i < j && v[i] == ' ' {
		i++
	}
	for j > i && v[j-1] == ' ' {
		j--
	}
	tok := v[i:j]
	if tok == "" {
		return "", false
	}
	for k := 0; k < len(tok); k++ {
		if c := tok[k]; c <= ' ' || c == 0x7f {
			return "", false
		}
	}
	return tok, true
}
