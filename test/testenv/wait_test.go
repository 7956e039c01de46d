package testenv

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	ctx := context.Background()
	var n atomic.Int32
	if err := Eventually(ctx, time.Second, time.Millisecond, func(context.Context) (bool, error) {
		return n.Add(1) == 3, nil
	}); err != nil || n.Load() != 3 {
		t.Fatalf("err %v after %d calls, want nil after 3", err, n.Load())
	}

	err := EventuallyWhy(ctx, 20*time.Millisecond, time.Millisecond, func(context.Context) (bool, string, error) {
		return false, "still 0", nil
	})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "still 0") {
		t.Fatalf("got %v, want a timeout naming the last reason", err)
	}

	stop := errors.New("process exited")
	n.Store(0)
	err = Eventually(ctx, time.Second, time.Millisecond, func(context.Context) (bool, error) {
		n.Add(1)
		return false, stop
	})
	if !errors.Is(err, stop) || n.Load() != 1 {
		t.Fatalf("got %v after %d calls, want the condition's error after 1", err, n.Load())
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Eventually(cctx, time.Second, time.Millisecond, func(context.Context) (bool, error) { return true, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestWaitHTTP(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := WaitHTTP(context.Background(), srv.URL, 5*time.Second, time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	gone := errors.New("gone")
	if err := WaitHTTP(context.Background(), "http://127.0.0.1:1/", 5*time.Second, time.Millisecond, func() error { return gone }); !errors.Is(err, gone) {
		t.Fatalf("got %v, want the liveness error", err)
	}
}
