// Command bare is the baseline of `make bench`: a bare net/http server that
// answers every request with a fixed small JSON body, about the size of the
// auth server's 200 answer. It is what "as fast as Go's HTTP server allows"
// means on this machine; the auth server is measured against it in the same
// run.
//
// Two options add, one at a time, what the auth server must do beyond that,
// so that the harness can attribute the gap: -timeouts sets the auth
// server's HTTP timeouts (read-header, read, write, idle), and -headers sends
// the headers of a verify answer for a key with an hourly limit.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// body is a fixed answer of the same shape and size as a verify answer.
var body = []byte(`{"valid":true,"key_id":"0123456789ab","permissions":["read","write"],"environment":"production",` +
	`"rate_limit":{"limit":1000000000,"remaining":999999999,"reset":"2026-01-01T00:00:00Z"}}` + "\n")

// The headers of a 200 verify answer for a key with an hourly limit, as the
// auth server sends them.
var verifyHeaders = http.Header{
	"Content-Type":           {"application/json"},
	"Cache-Control":          {"no-store"},
	"X-Content-Type-Options": {"nosniff"},
	"X-Ratelimit-Limit":      {"1000000000"},
	"X-Ratelimit-Remaining":  {"999999999"},
	"X-Ratelimit-Reset":      {"1767225600"},
	"Ratelimit-Policy":       {`"hourly";q=1000000000;w=3600`},
	"Ratelimit":              {`"hourly";r=999999999;t=1800`},
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "Address to listen on.")
	timeouts := flag.Bool("timeouts", false, "Set the auth server's HTTP timeouts.")
	headers := flag.Bool("headers", false, "Send the headers of a verify answer.")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	if *headers {
		h = func(w http.ResponseWriter, _ *http.Request) {
			hd := w.Header()
			for k, v := range verifyHeaders {
				hd[k] = v
			}
			_, _ = w.Write(body)
		}
	}
	// By default deliberately nothing else: this is the bare baseline.
	srv := &http.Server{Handler: h} //nolint:gosec // baseline server on loopback; -timeouts adds them
	if *timeouts {
		// webhookserver's readHeaderTimeout, readTimeout, writeTimeout, idleTimeout.
		srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout = 5*time.Second, 10*time.Second, 10*time.Second, 120*time.Second
	}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}
