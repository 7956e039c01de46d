package answer

import (
	"strings"
	"testing"
)

func TestLoggable(t *testing.T) {
	k := "mtr_live_" + strings.Repeat("a", 46)
	for _, tc := range []struct{ in, want string }{
		{"/v1/x", "/v1/x"},
		{"/a/" + k + "/b", "/a/mtr_[redacted]/b"},
		{k + "," + k, "mtr_[redacted],mtr_[redacted]"},
		{"mtr_", "mtr_[redacted]"},
		{strings.Repeat("x", 300), strings.Repeat("x", maxLoggedValue) + "…"},
		// Percent-encoded, in part or whole, it is the same key.
		{"/a/mtr%5Flive_" + k[9:] + "/b", "/a/mtr_[redacted]/b"},
		{"/a/%6dtr%5F%6Cive%5F" + k[9:] + "?x=1", "/a/mtr_[redacted]?x=1"},
		{"/a/mtr_live%5f" + k[9:12] + "%61" + k[13:], "/a/mtr_[redacted]"},
		{"/a/mtr%5", "/a/mtr%5"},
		{"100%25 mtr%zz_", "100%25 mtr%zz_"},
		// Encoded again and again, it is still the key to a chain of
		// servers that each decode once (issue 21).
		{"/a/%256dtr_live_" + k[9:] + "/b", "/a/mtr_[redacted]/b"},
		{"/a/%25256Dtr%25255flive%5F" + k[9:], "/a/mtr_[redacted]"},
		{"/a/%2525252525256dtr_live_" + k[9:] + "%252541", "/a/mtr_[redacted]"},
		{"/a/mtr_live_" + k[9:20] + "%2541" + k[21:] + "%2F", "/a/mtr_[redacted]%2F"},
		// In any case: a key's prefix is spelt mtr_, but a log must not
		// depend on which servers fold case.
		{"/a/MTR_LIVE_" + k[9:], "/a/mtr_[redacted]"},
		{"/a/%4D%54r_live_" + k[9:], "/a/mtr_[redacted]"},
		// What only looks like an escape is left as sent.
		{"%2525%25", "%2525%25"},
		{"/mtr%255", "/mtr%255"},
	} {
		if got := loggable(tc.in); got != tc.want {
			t.Errorf("loggable(%.40q) = %.60q, want %.60q", tc.in, got, tc.want)
		}
	}
}

// Whatever a client sends, what is logged holds no key: read with its
// escapes decoded until none is left, every "mtr_" in it, in any case, is a
// redaction.
func FuzzLoggable(f *testing.F) {
	k := "mtr_live_" + strings.Repeat("a", 46)
	for _, s := range []string{"/v1/x", "/a/" + k, "/a/mtr%5Flive_" + k[9:], "%6dtr_" + k[4:], "mtr%5", "%%%", "mmtr_" + k} {
		f.Add(s)
	}
	for _, s := range []string{"%256dtr_" + k[4:], "%25256Dtr%255F" + k[4:], "MtR_" + k[4:], "%2525%", "%%256d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := loggable(in)
		dec, _, _ := decodeAll(out)
		for rest := strings.ToLower(string(dec)); ; {
			i := strings.Index(rest, "mtr_")
			if i < 0 {
				break
			}
			rest = rest[i+len("mtr_"):]
			if !strings.HasPrefix(rest, "[redacted]") {
				t.Fatalf("loggable(%q) = %q holds an unredacted key", in, out)
			}
		}
	})
}
