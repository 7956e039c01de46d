package cmd

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func TestMetricsAuthFilter(t *testing.T) {
	reviews := 0
	now := time.Unix(1000, 0)
	a := &metricsAuth{cache: map[[32]byte]cachedReview{}, now: func() time.Time { return now },
		review: func(_ context.Context, token, verb, path string) (int, string, error) {
			reviews++
			if verb != "get" || path != "/metrics" {
				t.Errorf("reviewed %s %s", verb, path)
			}
			switch token {
			case "reader":
				return http.StatusOK, "", nil
			case "stranger":
				return http.StatusForbidden, "Authorization denied for user stranger", nil
			}
			return http.StatusUnauthorized, "Unauthorized", nil
		}}
	h, err := a.filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) }))
	if err != nil {
		t.Fatal(err)
	}
	get := func(auth string) int {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Basic abc", http.StatusUnauthorized},
		{"Bearer forged", http.StatusUnauthorized},
		{"Bearer stranger", http.StatusForbidden},
		{"Bearer reader", http.StatusOK},
		{"bearer reader", http.StatusOK},
	} {
		if got := get(tc.auth); got != tc.want {
			t.Errorf("%q: %d, want %d", tc.auth, got, tc.want)
		}
	}
	if reviews != 3 {
		t.Errorf("%d reviews, want 3 (the second reader request is cached)", reviews)
	}
	now = now.Add(2 * time.Minute)
	get("Bearer reader")
	if reviews != 4 {
		t.Errorf("an expired cache entry was not reviewed again")
	}
}
