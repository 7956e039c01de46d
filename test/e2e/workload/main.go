// Command workload is the end-to-end suite's stand-in for a workload built on
// pkg/meterrkey: it calls the auth server's verify endpoint in a loop with
// the key from a mounted Secret file and prints one JSON line per request
// (status, the key_id the server saw, the attempts it took) and per key
// reload. It never prints a key. It stops when its standard input closes
// (or, with --stop-on-stdin-close=false, on SIGTERM: test/cluster runs it in pods).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	neturl "net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meterr/meterr-operator/pkg/meterrkey"
)

type attemptsKey struct{}

// counting counts the requests that really go out, per caller's request.
type counting struct{ base http.RoundTripper }

func (c counting) RoundTrip(r *http.Request) (*http.Response, error) {
	if n, ok := r.Context().Value(attemptsKey{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	return c.base.RoundTrip(r)
}

type line struct {
	Worker   int    `json:"worker,omitempty"`
	Start    int64  `json:"start,omitempty"`
	End      int64  `json:"end,omitempty"`
	Status   int    `json:"status,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	Code     string `json:"code,omitempty"`
	Attempts int32  `json:"attempts,omitempty"`
	Err      string `json:"err,omitempty"`
	Reload   string `json:"reload,omitempty"`
	At       int64  `json:"at,omitempty"`
}

func main() {
	url := flag.String("url", "", "verify endpoint")
	keyFile := flag.String("key-file", meterrkey.DefaultPath, "mounted key file")
	workers := flag.Int("workers", 4, "concurrent request loops")
	interval := flag.Duration("interval", 20*time.Millisecond, "pause between a loop's requests")
	wait := flag.Duration("wait-for-new-key", 0, "Transport.WaitForNewKey")
	stdinStop := flag.Bool("stop-on-stdin-close", true, "stop when standard input closes; false: on SIGTERM or SIGINT (in a pod)")
	flag.Parse()

	var outMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(l line) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(l)
	}
	u, err := neturl.Parse(*url)
	if err != nil || u.Scheme == "" || u.Host == "" {
		log.Fatalf("--url %q: want an absolute URL", *url)
	}
	src, err := meterrkey.New(meterrkey.Options{
		Path: *keyFile,
		Env:  "-",
		OnReload: func(keyID string, err error) {
			l := line{Reload: keyID, At: time.Now().UnixNano()}
			if err != nil {
				l.Err = err.Error()
			}
			emit(l)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{
		Timeout: time.Minute,
		Transport: &meterrkey.Transport{
			Source:        src,
			Origins:       []string{u.Scheme + "://" + u.Host}, // the auth server only
			Base:          counting{http.DefaultTransport},
			WaitForNewKey: *wait,
		},
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	if *stdinStop {
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	}
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				var n atomic.Int32
				l := line{Worker: w + 1, Start: time.Now().UnixNano()}
				req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), attemptsKey{}, &n), http.MethodGet, *url, nil)
				resp, err := client.Do(req)
				if err != nil {
					l.Err = err.Error()
				} else {
					var body struct {
						KeyID string `json:"key_id"`
						Error struct {
							Code string `json:"code"`
						} `json:"error"`
					}
					_ = json.NewDecoder(resp.Body).Decode(&body)
					resp.Body.Close()
					l.Status, l.KeyID, l.Code = resp.StatusCode, body.KeyID, body.Error.Code
				}
				l.End, l.Attempts = time.Now().UnixNano(), n.Load()
				emit(l)
				time.Sleep(*interval)
			}
		})
	}
	wg.Wait()
	if err := src.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}
