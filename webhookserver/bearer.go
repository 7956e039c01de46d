package webhookserver

// bearerToken returns the token of the request's only Authorization header,
// "Bearer <token>": the scheme in any case, one or more spaces, then exactly
// one token. Several Authorization headers are refused, as ambiguous.
func bearerToken(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	return bearerTokenValue(values[0])
}

// bearerTokenValue returns the token of one Authorization value.
func bearerTokenValue(v string) (string, bool) {
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

// asciiEqualFold is strings.EqualFold restricted to ASCII, so that no Unicode
// folding ("ſ" for "s") can make a scheme or host match.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
