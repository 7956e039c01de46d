package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
	"github.com/meterr/meterr-operator/test/testenv"
)

// benchLimit is the hourly limit of the load-test keys: the limiter is on the
// path, and no run comes near it.
const benchLimit = 1_000_000_000

// generateKeys makes n production keys on every core.
func generateKeys(n int) ([]string, error) {
	keys := make([]string, n)
	var wg sync.WaitGroup
	var first firstError
	workers := 4
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				k, err := apikey.Generate(apikey.EnvProduction)
				if err != nil {
					first.set(err)
					return
				}
				keys[i] = k
			}
		})
	}
	wg.Wait()
	if err := first.get(); err != nil {
		return nil, err
	}
	return keys, nil
}

// malform changes a key's last checksum character: same length and alphabet,
// wrong checksum.
func malform(k string) string {
	c := byte('0')
	if k[len(k)-1] == '0' {
		c = '1'
	}
	return k[:len(k)-1] + string(c)
}

func benchRecord(i int, key string, limit int64, disabled bool) *record.Record {
	return &record.Record{
		Owner: record.Owner{Namespace: "bench", Name: fmt.Sprintf("key-%06d", i),
			UID: types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))},
		Policy: record.Policy{Permissions: []string{"read", "write"}, Environment: apikey.EnvProduction,
			RequestsPerHour: limit, Disabled: disabled},
		Keys: []record.Version{record.NewVersion(key, time.Now().Add(-time.Minute))},
	}
}

func recordSecret(ns string, r *record.Record) (*corev1.Secret, error) {
	data, err := record.Encode(r)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ns,
			Name:        record.Name(r.Owner.Namespace, r.Owner.Name, r.Owner.UID),
			Labels:      record.Labels(),
			Annotations: map[string]string{authv1alpha1.AnnotationOwner: r.Owner.String()},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{record.DataKey: data},
	}, nil
}

// listRecords lists the key records of ns once, as the auth server's
// initial list does, and returns how many there are.
func listRecords(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	l, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: record.Selector})
	if err != nil {
		return 0, fmt.Errorf("listing the records: %w", err)
	}
	return len(l.Items), nil
}

// createRecords creates the records of keys[from:to] with many concurrent
// requests.
func (h *harness) createRecords(ctx context.Context, cs kubernetes.Interface, ns string, keys []string, from, to int) error {
	work := make(chan int, 1024)
	errc := make(chan error, 1)
	var done atomic.Int64
	var wg sync.WaitGroup
	for range h.cfg.createWorkers {
		wg.Go(func() {
			for i := range work {
				s, err := recordSecret(ns, benchRecord(i, keys[i], benchLimit, false))
				if err == nil {
					err = createRetry(ctx, func() error {
						_, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
						return err
					})
				}
				if err != nil {
					select {
					case errc <- fmt.Errorf("creating record %d: %w", i, err):
					default:
					}
					continue
				}
				if n := done.Add(1); n%20000 == 0 {
					h.logf("  %d records created", n)
				}
			}
		})
	}
	var err error
feed:
	for i := from; i < to; i++ {
		select {
		case work <- i:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// createRetry retries a create on throttling and transient errors; an object
// that already exists counts as created.
func createRetry(ctx context.Context, f func() error) error {
	var err error
	for attempt := range 8 {
		err = f()
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		if !apierrors.IsTooManyRequests(err) && !apierrors.IsServerTimeout(err) && !apierrors.IsTimeout(err) &&
			!apierrors.IsServiceUnavailable(err) && !apierrors.IsInternalError(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(10<<attempt) * time.Millisecond):
		}
	}
	return err
}

// verifier asks one auth server about keys over one keep-alive connection.
type verifier struct {
	base string
	c    *http.Client
}

func newVerifier(addr string) *verifier {
	return &verifier{base: "http://" + addr, c: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true},
	}}
}

func (v *verifier) status(ctx context.Context, key string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.base+"/v1/auth/verify", nil)
	if err != nil {
		return 0, "", err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := v.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode, string(body), nil
}

// pollUntil asks about key every interval until the answer has status want;
// it returns how long that took from start.
func (v *verifier) pollUntil(ctx context.Context, key string, want int, start time.Time, interval, timeout time.Duration) (time.Duration, error) {
	err := testenv.EventuallyWhy(ctx, timeout-time.Since(start), interval, func(ctx context.Context) (bool, string, error) {
		code, _, err := v.status(ctx, key)
		if ctx.Err() != nil {
			return false, "", ctx.Err()
		}
		// A failed request is retried like a wrong answer, and named if
		// it was the last.
		why := fmt.Sprintf("want %d, last %d", want, code)
		if err != nil {
			why = "last error: " + err.Error()
		}
		return err == nil && code == want, why, nil
	})
	return time.Since(start), err
}

// sanity checks one auth server's answers before measuring it: a harness
// that measures a server refusing valid keys measures nothing.
func (h *harness) sanity(ctx context.Context, addr string, valid, unknown, malformed string) error {
	v := newVerifier(addr)
	code, body, err := v.status(ctx, valid)
	if err != nil {
		return err
	}
	if code != http.StatusOK || !strings.Contains(body, `"valid":true`) || !strings.Contains(body, `"limit":`+strconv.Itoa(benchLimit)) {
		return fmt.Errorf("a valid key was refused: HTTP %d %s", code, strings.TrimSpace(body))
	}
	for name, k := range map[string]string{"unknown": unknown, "malformed": malformed} {
		code, body, err := v.status(ctx, k)
		if err != nil {
			return err
		}
		if code != http.StatusUnauthorized || !strings.Contains(body, "invalid_api_key") {
			return fmt.Errorf("an %s key got HTTP %d %s, want 401 invalid_api_key", name, code, strings.TrimSpace(body))
		}
	}
	return nil
}

// watchTimes records when a watch in the harness sees each change of the
// records, the baseline of the propagation figures: no watcher can act on a
// change before it is delivered.
type watchTimes struct {
	mu   sync.Mutex
	seen map[string]time.Time
	cond *sync.Cond
}

func newWatchTimes() *watchTimes {
	w := &watchTimes{seen: map[string]time.Time{}}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func watchKey(t watch.EventType, name, rv string) string { return string(t) + "/" + name + "/" + rv }

func (w *watchTimes) run(ctx context.Context, cs kubernetes.Interface, ns, selector string) error {
	list, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: selector, Limit: 1})
	if err != nil {
		return err
	}
	wi, err := cs.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	go func() {
		defer wi.Stop()
		for ev := range wi.ResultChan() {
			now := time.Now()
			s, ok := ev.Object.(*corev1.Secret)
			if !ok {
				continue
			}
			w.mu.Lock()
			w.seen[watchKey(ev.Type, s.Name, s.ResourceVersion)] = now
			if ev.Type == watch.Deleted {
				w.seen[watchKey(ev.Type, s.Name, "")] = now
			}
			w.cond.Broadcast()
			w.mu.Unlock()
		}
	}()
	return nil
}

// wait returns when the event was seen, waiting at most timeout (the
// callers' contexts end long before that matters).
func (w *watchTimes) wait(key string, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
	defer t.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if at, ok := w.seen[key]; ok {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		w.cond.Wait()
	}
}

// propagation measures record change -> auth server acting on it, against
// the auth server at addr, n times each for a new key, a disabled key and a
// deleted record.
func (h *harness) propagation(ctx context.Context, cs kubernetes.Interface, ns, addr string, n int) (map[string]*samples, error) {
	wt := newWatchTimes()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := wt.run(wctx, cs, ns, record.Selector); err != nil {
		return nil, err
	}
	v := newVerifier(addr)
	res := map[string]*samples{}
	for _, k := range []string{"add", "disable", "delete"} {
		res[k], res[k+"-watch"] = &samples{}, &samples{}
	}
	const timeout = 5 * time.Second
	keys, err := generateKeys(n)
	if err != nil {
		return nil, err
	}
	secrets := cs.CoreV1().Secrets(ns)
	measure := func(kind, key string, want int, start time.Time, watchKey string) error {
		d, err := v.pollUntil(ctx, key, want, start, h.cfg.pollInterval, timeout)
		if err != nil {
			return fmt.Errorf("propagation (%s): %w", kind, err)
		}
		res[kind].add(d)
		if at, ok := wt.wait(watchKey, timeout); ok {
			res[kind+"-watch"].add(max(0, at.Sub(start)))
		}
		return nil
	}
	for i := range n {
		rec := benchRecord(900_000+i, keys[i], 0, false)
		s, err := recordSecret(ns, rec)
		if err != nil {
			return nil, err
		}
		// New key -> accepted.
		created, err := secrets.Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := measure("add", keys[i], http.StatusOK, start, watchKey(watch.Added, s.Name, created.ResourceVersion)); err != nil {
			return nil, err
		}
		// Disabled -> refused.
		rec.Policy.Disabled = true
		data, _ := record.Encode(rec)
		created.Data = map[string][]byte{record.DataKey: data}
		updated, err := secrets.Update(ctx, created, metav1.UpdateOptions{})
		if err != nil {
			return nil, err
		}
		start = time.Now()
		if err := measure("disable", keys[i], http.StatusUnauthorized, start, watchKey(watch.Modified, s.Name, updated.ResourceVersion)); err != nil {
			return nil, err
		}
		// Enabled again (not measured), then deleted -> refused.
		rec.Policy.Disabled = false
		data, _ = record.Encode(rec)
		updated.Data = map[string][]byte{record.DataKey: data}
		if _, err := secrets.Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
		if _, err := v.pollUntil(ctx, keys[i], http.StatusOK, time.Now(), h.cfg.pollInterval, timeout); err != nil {
			return nil, fmt.Errorf("propagation (re-enable): %w", err)
		}
		if err := secrets.Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
			return nil, err
		}
		start = time.Now()
		if err := measure("delete", keys[i], http.StatusUnauthorized, start, watchKey(watch.Deleted, s.Name, "")); err != nil {
			return nil, err
		}
		// Keep the API server and the auth server from running flat out.
		time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
	}
	return res, nil
}
