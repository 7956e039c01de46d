// Package ascii compares protocol tokens (HTTP schemes, header tokens, host
// names) case-insensitively in ASCII only.
package ascii

// EqualFold is strings.EqualFold restricted to ASCII, so that no Unicode
// folding ("K" for the Kelvin sign, "ſ" for "s") can make two different
// hosts, schemes or tokens equal.
func EqualFold(a, b string) bool {
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
