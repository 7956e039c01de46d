package usage

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestSince(t *testing.T) {
	for q, want := range map[string]int64{"": 0, "since=0": 0, "since=1765000000": 1765000000} {
		r := httptest.NewRequest("GET", Path+"?"+q, nil)
		if got, err := Since(r); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", q, got, err, want)
		}
	}
	for _, q := range []string{"since=-1", "since=x", "since=1e9", "since=99999999999999999999"} {
		if _, err := Since(httptest.NewRequest("GET", Path+"?"+q, nil)); err == nil {
			t.Errorf("%q: no error", q)
		}
	}
}

func TestAuthorized(t *testing.T) {
	tok := []byte("s3cret")
	for auth, want := range map[string]bool{"Bearer s3cret": true, "Bearer s3cre": false, "bearer s3cret": false, "": false, "Bearer ": false} {
		r := httptest.NewRequest("GET", Path, nil)
		r.Header.Set("Authorization", auth)
		if Authorized(r, tok) != want {
			t.Errorf("%q: want %v", auth, want)
		}
	}
	r := httptest.NewRequest("GET", Path, nil)
	r.Header.Set("Authorization", "Bearer ")
	if Authorized(r, nil) {
		t.Error("an empty token authorizes")
	}
}

// FuzzSince: the since parameter of an untrusted query never panics and is
// never negative.
func FuzzSince(f *testing.F) {
	for _, s := range []string{"0", "1765000000", "-1", "x", "", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := httptest.NewRequest("GET", Path, nil)
		r.URL.RawQuery = "since=" + url.QueryEscape(s)
		if v, err := Since(r); err == nil && v < 0 {
			t.Fatalf("since %d", v)
		}
	})
}
