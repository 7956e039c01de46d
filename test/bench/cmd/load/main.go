// Command load is a small closed-loop HTTP/1.1 load generator: -c keep-alive
// connections, each sending one request at a time for -d, with the
// Authorization header taken in turn from -keys. `make bench` uses wrk when it
// is installed and this program when it is not; it writes raw requests and
// reads responses with a minimal parser, so that it costs far less CPU than
// the servers it drives. It prints one JSON object.
//
// Keys are read from a file (a private temporary file the harness writes),
// never from the command line, and never printed.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Result is what load prints.
type Result struct {
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	Non2xx   int64   `json:"non2xx"`
	Errors   int64   `json:"errors"`
	P50us    float64 `json:"p50_us"`
	P75us    float64 `json:"p75_us"`
	P90us    float64 `json:"p90_us"`
	P99us    float64 `json:"p99_us"`
	MaxUs    float64 `json:"max_us"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "host:port of the server.")
	path := flag.String("path", "/v1/auth/verify", "Request path.")
	conns := flag.Int("c", 32, "Connections (one request in flight on each).")
	dur := flag.Duration("d", 10*time.Second, "Duration.")
	keysFile := flag.String("keys", "", "File with one bearer token per line; empty sends no Authorization header.")
	flag.Parse()

	var tokens []string
	if *keysFile != "" {
		data, err := os.ReadFile(*keysFile)
		if err != nil {
			fail(err)
		}
		for _, l := range bytes.Split(data, []byte("\n")) {
			if l = bytes.TrimSpace(l); len(l) > 0 {
				tokens = append(tokens, string(l))
			}
		}
	}
	reqs := make([][]byte, 0, max(1, len(tokens)))
	if len(tokens) == 0 {
		reqs = append(reqs, []byte("GET "+*path+" HTTP/1.1\r\nHost: "+*addr+"\r\n\r\n"))
	}
	for _, t := range tokens {
		reqs = append(reqs, []byte("GET "+*path+" HTTP/1.1\r\nHost: "+*addr+"\r\nAuthorization: Bearer "+t+"\r\n\r\n"))
	}

	type stats struct {
		lat            []int64
		non2xx, errors int64
	}
	all := make([]stats, *conns)
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Go(func() {
			st := &all[w]
			st.lat = make([]int64, 0, 1<<16)
			i := w * len(reqs) / *conns
			var c net.Conn
			var br *bufio.Reader
			for time.Now().Before(deadline) {
				if c == nil {
					var err error
					if c, err = net.Dial("tcp", *addr); err != nil {
						st.errors++
						time.Sleep(10 * time.Millisecond)
						continue
					}
					br = bufio.NewReaderSize(c, 16<<10)
				}
				req := reqs[i%len(reqs)]
				i++
				t0 := time.Now()
				_ = c.SetDeadline(t0.Add(10 * time.Second))
				status, keep, err := roundTrip(c, br, req)
				if err != nil {
					st.errors++
					_ = c.Close()
					c = nil
					continue
				}
				st.lat = append(st.lat, int64(time.Since(t0)))
				if status < 200 || status > 399 {
					st.non2xx++
				}
				if !keep {
					_ = c.Close()
					c = nil
				}
			}
			if c != nil {
				_ = c.Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()

	var r Result
	var lat []int64
	for _, st := range all {
		lat = append(lat, st.lat...)
		r.Non2xx += st.non2xx
		r.Errors += st.errors
	}
	slices.Sort(lat)
	r.Requests = int64(len(lat))
	r.Seconds = elapsed
	r.RPS = float64(r.Requests) / elapsed
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := min(len(lat)-1, int(p*float64(len(lat))))
		return float64(lat[i]) / 1e3
	}
	r.P50us, r.P75us, r.P90us, r.P99us = pct(0.50), pct(0.75), pct(0.90), pct(0.99)
	if len(lat) > 0 {
		r.MaxUs = float64(lat[len(lat)-1]) / 1e3
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// roundTrip writes one request and reads its response: the status code and
// whether the connection stays open. Bodies are skipped (Content-Length or
// chunked).
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (status int, keepAlive bool, err error) {
	if _, err = c.Write(req); err != nil {
		return 0, false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errors.New("bad status line")
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, err
	}
	keepAlive = line[7] == '1'
	length, chunked := int64(-1), false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil {
				return 0, false, err
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keepAlive = false
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				keepAlive = true
			}
		}
	}
	switch {
	case chunked:
		for {
			l, err := br.ReadSlice('\n')
			if err != nil {
				return 0, false, err
			}
			l = bytes.TrimRight(l, "\r\n")
			if i := bytes.IndexByte(l, ';'); i >= 0 {
				l = l[:i]
			}
			n, err := strconv.ParseInt(string(l), 16, 64)
			if err != nil {
				return 0, false, err
			}
			if _, err := br.Discard(int(n) + 2); err != nil {
				return 0, false, err
			}
			if n == 0 {
				break
			}
		}
	case length > 0:
		if _, err := br.Discard(int(length)); err != nil {
			return 0, false, err
		}
	case length < 0 && status != 204 && status != 304:
		// Body until close.
		_, _ = io.Copy(io.Discard, br)
		keepAlive = false
	}
	return status, keepAlive, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "load:", err)
	os.Exit(1)
}
