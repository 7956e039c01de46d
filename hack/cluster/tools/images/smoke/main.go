// Command smoke is the local cluster's smoke-test image (test/cluster):
//
//	smoke serve [--addr :8080] [--file PATH]
//	    GET /       answers the pod's hostname
//	    GET /file   answers the content of PATH (a mounted Secret, say)
//	smoke probe --lookup NAME --get URL [--count N] [--interval D]
//	    resolves NAME, then GETs URL N times, one line per result; exits 1
//	    if the lookup or any GET failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: smoke serve|probe [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	switch os.Args[1] {
	case "serve":
		addr := fs.String("addr", ":8080", "listen address")
		file := fs.String("file", "", "file served at /file")
		_ = fs.Parse(os.Args[2:])
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, host) })
		http.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
			b, err := os.ReadFile(*file)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, _ = w.Write(b)
		})
		srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 5 * time.Second}
		fmt.Println("serving on", *addr)
		if err := srv.ListenAndServe(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "probe":
		lookup := fs.String("lookup", "", "a name to resolve first")
		get := fs.String("get", "", "a URL to GET")
		count := fs.Int("count", 10, "how many GETs")
		interval := fs.Duration("interval", 200*time.Millisecond, "pause between GETs")
		_ = fs.Parse(os.Args[2:])
		ok := true
		if *lookup != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			addrs, err := net.DefaultResolver.LookupHost(ctx, *lookup)
			cancel()
			if err != nil {
				fmt.Printf("lookup %s: error: %v\n", *lookup, err)
				ok = false
			} else {
				fmt.Printf("lookup %s: %s\n", *lookup, strings.Join(addrs, ","))
			}
		}
		// A new connection per GET, so that the Service spreads them over
		// its endpoints.
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; *get != "" && i < *count; i++ {
			if i > 0 {
				time.Sleep(*interval)
			}
			resp, err := client.Get(*get)
			if err != nil {
				fmt.Printf("get %s: error: %v\n", *get, err)
				ok = false
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			fmt.Printf("get %s: %d %s\n", *get, resp.StatusCode, strings.TrimSpace(string(body)))
			if resp.StatusCode != http.StatusOK {
				ok = false
			}
		}
		if !ok {
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
