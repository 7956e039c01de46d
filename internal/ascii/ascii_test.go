package ascii

import "testing"

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"Bearer", "bearer", true},
		{"HTTPS", "https", true},
		{"close", "close", true},
		{"clo", "close", false},
		{"cloſe", "close", false},  // ſ folds to s in Unicode, not here
		{"\u212aey", "key", false}, // the Kelvin sign
		{"a-b", "A_B", false},
		{"", "", true},
	} {
		if got := EqualFold(tc.a, tc.b); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
