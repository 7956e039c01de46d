package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrTimeout is returned (wrapped) by Eventually when the condition did not
// hold in time.
var ErrTimeout = errors.New("timed out")

// Eventually calls cond every interval (the first call at once) until it
// returns true, returns an error, ctx ends or timeout passes. A condition's
// error ends the wait at once (a process that died will not come back); a
// condition that is merely not yet met returns false, nil. The timeout error
// wraps ErrTimeout and, when the condition gave one, its last reason.
//
// It is Gomega's Eventually for code that is not a test (the benchmark
// harness) and for helpers shared by tests of both kinds.
func Eventually(ctx context.Context, timeout, interval time.Duration, cond func(ctx context.Context) (bool, error)) error {
	return EventuallyWhy(ctx, timeout, interval, func(ctx context.Context) (bool, string, error) {
		ok, err := cond(ctx)
		return ok, "", err
	})
}

// EventuallyWhy is Eventually with a condition that also says why it does not
// hold yet; the last reason is in the timeout error.
func EventuallyWhy(ctx context.Context, timeout, interval time.Duration, cond func(ctx context.Context) (bool, string, error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		// Both may be ready at once; an ended context wins.
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		ok, why, err := cond(ctx)
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			if why != "" {
				return fmt.Errorf("%w after %s: %s", ErrTimeout, timeout, why)
			}
			return fmt.Errorf("%w after %s", ErrTimeout, timeout)
		}
		// The interval is between the starts of two calls, as a poller's
		// rate should be.
		t.Reset(max(0, interval-time.Since(start)))
	}
}

// WaitHTTP waits until url answers 200 OK, polling every interval. alive, if
// not nil, is asked after each failed poll and ends the wait with its error
// (the server's process exited).
func WaitHTTP(ctx context.Context, url string, timeout, interval time.Duration, alive func() error) error {
	c := &http.Client{Timeout: time.Second}
	return EventuallyWhy(ctx, timeout, interval, func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, "", err
		}
		why := ""
		if resp, err := c.Do(req); err != nil {
			why = err.Error()
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, "", nil
			}
			why = "HTTP " + resp.Status
		}
		if alive != nil {
			if err := alive(); err != nil {
				return false, "", err
			}
		}
		return false, url + ": " + why, nil
	})
}
