package webhookserver

import (
	"crypto/sha256"

	"github.com/meterr/meterr-operator/internal/apikey"
)

// bearerToken returns the token of the request's only Authorization header,
// "Bearer <token>": the scheme in any case, one or more spaces, then exactly
// one token. Several Authorization headers are refused, as ambiguous.
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	v := values[0]
	const scheme = "bearer"
	if len(v) <= len(scheme) || !asciiEqualFold(v[:len(scheme)], scheme) || v[len(scheme)] != ' ' {
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

// hashKey is apikey.HashOf for a parsed key without the allocation that
// converting a string to a []byte costs.
func hashKey(key string) apikey.Hash {
	var buf [apikey.Len]byte
	n := copy(buf[:], key)
	return sha256.Sum256(buf[:n])
}
