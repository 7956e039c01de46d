package webhookserver

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/peer"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/quota"
	"github.com/meterr/meterr-operator/test/redistest"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// The window is data: a limit of 3 a day, a window length no record has
// today, flows from the compiled policy through both limiters and every
// front-end (verify, forward-auth, NGINX mode, gRPC Check) to the headers
// and the body, with no code of theirs knowing the length. The day ends at
// 00:00 UTC; at t0 (11:30) that is 45,000 seconds away.
func TestWindowIsData(t *testing.T) {
	r := redistest.Start(t)
	// Failing closed, so that a Redis error shows as a 503 rather than as a
	// count in memory.
	rl, err := ratelimit.NewRedis(ratelimit.RedisOptions{URL: r.URL(), Timeout: time.Second,
		FailureMode: ratelimit.FailClosed, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Close() })
	for _, lim := range []struct {
		name string
		l    authz.Limiter
	}{{"memory", ratelimit.NewMemory()}, {"redis", rl}} {
		t.Run(lim.name, func(t *testing.T) {
			f := newFixture(t, func(c *ServerConfig) { c.Limiter = lim.l })
			key := newKey(t, "production")
			c := authz.Compile(&authz.RecordSpec{Name: "rec-daily", Owner: "team-a/daily", LimitID: "uid-daily-" + lim.name,
				Environment: "production", Permissions: []string{"read"}, Limit: quota.Limit{Count: 3, Window: quota.Daily},
				Versions: []authz.VersionSpec{{Hash: apikey.HashOf(key).String()}}, Created: t0})
			if err := f.idx.Install(c); err != nil {
				t.Fatal(err)
			}
			const reset, resetUnix = "2025-01-16T00:00:00Z", "1736985600"

			// verify: 2 left.
			w := f.do(req{key: key})
			checkDaily(t, "verify", w.Code, 200, w.Header(), "2", "45000")
			var body struct {
				RateLimit struct {
					Limit, Remaining int64
					Reset            string
				} `json:"rate_limit"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.RateLimit.Reset != reset || body.RateLimit.Remaining != 2 {
				t.Fatalf("verify body %s", w.Body)
			}
			if w.Header().Get("X-RateLimit-Reset") != resetUnix {
				t.Fatalf("X-RateLimit-Reset %s, want %s", w.Header().Get("X-RateLimit-Reset"), resetUnix)
			}
			// forward-auth: 1 left.
			w = f.do(req{key: key, target: request.CheckPath + "/v1/usage"})
			checkDaily(t, "check", w.Code, 200, w.Header(), "1", "45000")
			// gRPC: the last one.
			gw := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4000}})
			resp, err := f.srv.extAuthz.Check(gw, checkReq{key: key}.build())
			if err != nil || resp.GetOkResponse() == nil {
				t.Fatalf("gRPC: %v %v", resp, err)
			}
			checkDaily(t, "gRPC", 200, 200, grpcHeaders(headerMap(resp.GetOkResponse().GetHeaders())), "0", "45000")
			// NGINX mode: over the limit, Retry-After is the rest of the day.
			w = f.do(req{key: key, target: request.CheckPath + "?mode=nginx"})
			checkDaily(t, "nginx", w.Code, 403, w.Header(), "0", "45000")
			if w.Header().Get("X-Meterr-Status") != "429" || w.Header().Get("Retry-After") != "45000" {
				t.Fatalf("nginx: %v", w.Header())
			}
			// gRPC over the limit.
			resp, _ = f.srv.extAuthz.Check(gw, checkReq{key: key}.build())
			hs := headerMap(resp.GetDeniedResponse().GetHeaders())
			checkDaily(t, "gRPC denied", int(resp.GetDeniedResponse().GetStatus().GetCode()), 429, grpcHeaders(hs), "0", "45000")
			if hs["retry-after"] != "45000" {
				t.Fatalf("gRPC Retry-After %q", hs["retry-after"])
			}
			// An hour later it is the same day: still refused (an hourly
			// window would have started afresh).
			f.clock.SetTime(t0.Add(time.Hour))
			w = f.do(req{key: key})
			checkDaily(t, "verify an hour later", w.Code, 429, w.Header(), "0", "41400")
			// The next day counts afresh.
			f.clock.SetTime(time.Date(2025, 1, 16, 0, 0, 0, 0, time.UTC))
			w = f.do(req{key: key})
			if w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != "2" || w.Header().Get("RateLimit") != `"daily";r=2;t=86400` {
				t.Fatalf("next day: %d %v", w.Code, w.Header())
			}
		})
	}
}

// checkDaily checks an answer's status and its rate-limit headers for the
// daily limit of 3.
func checkDaily(t *testing.T, what string, status, wantStatus int, h http.Header, remaining, secs string) {
	t.Helper()
	if status != wantStatus || h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != remaining ||
		h.Get("RateLimit-Policy") != `"daily";q=3;w=86400` || h.Get("RateLimit") != `"daily";r=`+remaining+`;t=`+secs {
		t.Fatalf("%s: %d %v; want %d, %s left, %s s to the day's end", what, status, h, wantStatus, remaining, secs)
	}
}

// grpcHeaders is a CheckResponse's header map as an http.Header.
func grpcHeaders(m map[string]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		h.Set(k, v)
	}
	return h
}
