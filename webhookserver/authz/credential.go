package authz

// BearerToken returns the token of one Authorization value, "Bearer
// <token>": the scheme in any case, one or more spaces, then exactly one
// token. The credential is the first fact of a decision; every front-end
// reads it here.
func BearerToken(v string) (string, bool) {
	const scheme = "bearer"
	if len(v) <= len(scheme) || !EqualFoldASCII(v[:len(scheme)], scheme) || v[len(scheme)] != ' ' {
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

// EqualFoldASCII is strings.EqualFold restricted to ASCII, so that no
// Unicode folding ("K" for the Kelvin sign, "ſ" for "s") can make two
// different hosts or schemes equal.
func EqualFoldASCII(a, b string) bool {
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
