package webhookserver

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
)

// Index finds the entry for a key hash. It is all the front-ends know of
// where keys come from: implementations must be safe for concurrent use, must
// not block on I/O and should allocate little (index.Index, the one the auth
// server uses, allocates only the key id's string).
type Index interface {
	Lookup(h apikey.Hash) (authz.Entry, bool)
}

// ServerConfig configures the HTTP handler.
type ServerConfig struct {
	// Index finds keys. Required.
	Index Index
	// Limiter counts requests; nil means a new ratelimit.Memory. Forgetting a
	// deleted key's count is the record loader's job, not the handler's.
	Limiter authz.Limiter
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// Environment, when set, refuses keys of any other environment.
	Environment string
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// TrustedHops, when positive, takes the client address from that
	// position from the right of a trusted peer's X-Forwarded-For
	// (--trusted-hops).
	TrustedHops int
	// Routes require permissions on forward-auth requests.
	Routes []Route
	// Registerer receives the handler's metrics; nil means a private
	// registry (nothing is ever registered globally).
	Registerer prometheus.Registerer
	// LogDecisions is LogDecisionsOff (or empty), LogDecisionsDenied or
	// LogDecisionsAll: write one line per decision, or per refusal, to Log
	// (--log-decisions).
	LogDecisions string
	// Log receives the decision lines.
	Log logr.Logger
}

// Server is the auth server's HTTP handler.
type Server struct {
	index   Index
	decider authz.Decider
	clock   clock.PassiveClock
	trusted []netip.Prefix
	hops    int
	routes  routeTable
	metrics *serverMetrics
	// dlog is nil unless decisions are logged.
	dlog  *decisionLog
	ready atomic.Bool
	// loaded is set with the first SetReady(true) and never cleared: a
	// server draining for shutdown still decides correctly.
	loaded atomic.Bool

	envMismatchBody []byte
	windows         windowTexts
}

// NewServer returns the handler for c. It is not ready (/readyz answers 503)
// until SetReady(true).
func NewServer(c ServerConfig) (*Server, error) {
	if c.Index == nil {
		return nil, fmt.Errorf("auth server: no index")
	}
	if c.Limiter == nil {
		c.Limiter = ratelimit.NewMemory()
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if err := validateEnvironment(c.Environment); err != nil {
		return nil, err
	}
	if err := validateLogDecisions(c.LogDecisions); err != nil {
		return nil, fmt.Errorf("auth server: decision log: %w", err)
	}
	routes, err := compileRoutes(c.Routes)
	if err != nil {
		return nil, err
	}
	m, err := newServerMetrics(c.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{
		index:           c.Index,
		decider:         authz.Decider{Environment: c.Environment, Limiter: c.Limiter},
		clock:           c.Clock,
		trusted:         append([]netip.Prefix(nil), c.TrustedProxies...),
		hops:            c.TrustedHops,
		routes:          routes,
		metrics:         m,
		dlog:            newDecisionLog(c.LogDecisions, c.Log, m.decisionLogsDropped, c.Clock.Now()),
		envMismatchBody: environmentMismatchBody(c.Environment),
	}, nil
}

// SetReady sets what /readyz answers.
// Decisions asked for before the first SetReady(true) get 503 not_ready
// rather than a 401 for a key that simply has not been loaded yet.
func (s *Server) SetReady(ready bool) {
	if ready {
		s.loaded.Store(true)
	}
	s.ready.Store(ready)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case (p == verifyPath || p == checkPath || strings.HasPrefix(p, checkPath+"/")) && !s.loaded.Load():
		w.Header()["Retry-After"] = hvRetryOneSecond
		writeAnswer(w, http.StatusServiceUnavailable, bodyNotLoaded)
		s.observe(r, authz.NotReady, 0, s.clock.Now())
	case p == verifyPath:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header()["Allow"] = hvAllowVerify
			writeAnswer(w, http.StatusMethodNotAllowed, bodyMethodNotAllowed)
			return
		}
		s.decide(w, r, 0, false, false, s.clock.Now())
	case p == checkPath || strings.HasPrefix(p, checkPath+"/"):
		s.check(w, r)
	case p == "/healthz":
		writeAnswer(w, http.StatusOK, bodyHealthy)
	case p == "/readyz":
		if s.ready.Load() {
			writeAnswer(w, http.StatusOK, bodyReady)
		} else {
			writeAnswer(w, http.StatusServiceUnavailable, bodyNotReady)
		}
	default:
		writeAnswer(w, http.StatusNotFound, bodyNotFound)
	}
}

// check works out the permission a forward-auth request requires, then
// decides. ?permission= and ?mode= count only on the bare /v1/auth/check
// URL: when Envoy appends the original path, the query string is the
// client's own.
func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	start := s.clock.Now()
	need, explicit, nginx := authz.Permission(0), false, false
	if r.URL.Path == checkPath && r.URL.RawQuery != "" {
		nginx = queryNginxMode(r.URL.RawQuery)
		n, present, ok := queryPermission(r.URL.RawQuery)
		if !ok {
			s.invalidRequest(w, r, bodyUnknownPerm, start, nginx)
			return
		}
		need, explicit = n, present
	}
	if !explicit && len(s.routes) > 0 {
		found, ok := forEachOriginal(r, func(method, path string) { need |= s.routes.match(method, path) })
		if !ok {
			s.invalidRequest(w, r, bodyBadOriginal, start, nginx)
			return
		}
		if !found {
			s.invalidRequest(w, r, bodyNoOriginal, start, nginx)
			return
		}
	}
	s.decide(w, r, need, true, nginx, start)
}

func (s *Server) invalidRequest(w http.ResponseWriter, r *http.Request, body []byte, start time.Time, nginx bool) {
	d := authz.Decision{Code: authz.InvalidRequest}
	s.writeDecision(w, &d, body, true, nginx)
	s.observe(r, authz.InvalidRequest, 0, start)
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request, need authz.Permission, check, nginx bool, start time.Time) {
	d := s.decideFrom(r.Context(), credential(r.Header), authz.Input{Required: need, Now: start}, r)
	s.writeDecision(w, &d, nil, check, nginx)
	s.observe(r, d.Code, need, start)
}

// decideFrom finds the key of cred, the request's Authorization value
// ("Bearer <key>"; "" when there is none, or several), and decides with the
// facts in in. With r set, ClientIP and OriginHost are worked out from r,
// and only when the key's restrictions need them (authz.Input.NeedsClient).
func (s *Server) decideFrom(ctx context.Context, cred string, in authz.Input, r *http.Request) authz.Decision {
	if !s.loaded.Load() {
		return authz.Decision{Code: authz.NotReady, Required: in.Required}
	}
	// Shape and checksum first: a malformed key costs no hash and no lookup.
	if tok, ok := authz.BearerToken(cred); ok && apikey.Parse(tok) == nil {
		in.Entry, in.Found = s.index.Lookup(apikey.HashOf(tok))
	}
	if r != nil && in.NeedsClient() {
		in.ClientIP = s.httpClient(r)
		in.OriginHost = requestHost(r.Header)
	}
	return s.decider.Decide(ctx, &in)
}

// observe counts a decision and, with --log-decisions, logs it.
func (s *Server) observe(r *http.Request, c authz.Code, need authz.Permission, start time.Time) {
	s.metrics.decisions[c].Inc()
	s.metrics.duration.Observe(s.clock.Since(start).Seconds())
	if s.dlog != nil {
		s.logDecision(r, c, need)
	}
}

// writeDecision renders d as the HTTP answer (with body, for a request the
// front-end refused itself: see appendBody); check adds, when allowed, the
// identity headers for the upstream and asks the proxy to remove the key
// (x-envoy-auth-headers-to-remove: authorization). nginx renders a refusal
// for NGINX's auth_request (see nginxDenial). It sets what appendHeaders
// lists, without allocating beyond one answerValues for the values that
// change per request.
func (s *Server) writeDecision(w http.ResponseWriter, d *authz.Decision, body []byte, check, nginx bool) {
	h := w.Header()
	if nginx && d.Code != authz.OK {
		s.nginxDenial(w, d, body)
		return
	}
	var t *classText
	if d.Authenticated() {
		t = textOf(&d.Policy)
	}
	var v *answerValues
	if d.Rate == authz.RateCounted || check && d.Code == authz.OK {
		v = new(answerValues)
	}
	var remaining string
	var win *windowText
	switch d.Rate {
	case authz.RateCounted:
		win = s.windows.of(d.Reset)
		remaining = setRateLimitHeaders(h, v, t, d.Remaining, win, d.ResetIn, d.RetryAfter() > 0)
	case authz.RateUnknown:
		h["X-Ratelimit-Limit"] = t.hLimit
		h["Ratelimit-Policy"] = t.hPolicy
		h["Retry-After"] = hvRetryOneSecond
	}
	switch d.Code {
	case authz.OK:
	case authz.InvalidAPIKey, authz.ExpiredAPIKey:
		h["Www-Authenticate"] = hvBearer
		writeAnswer(w, http.StatusUnauthorized, s.bodyOf(d))
		return
	case authz.NotReady:
		h["Retry-After"] = hvRetryOneSecond
		writeAnswer(w, http.StatusServiceUnavailable, bodyNotLoaded)
		return
	default:
		bp := bufPool.Get().(*[]byte)
		b := s.appendBody((*bp)[:0], d, body)
		writeAnswer(w, d.Code.Status(), b)
		*bp = b
		bufPool.Put(bp)
		return
	}

	p := &d.Policy
	if check {
		v.id = [2]string{d.KeyID, p.Owner()}
		h["X-Meterr-Key-Id"] = v.id[0:1:1]
		h["X-Meterr-Key-Name"] = v.id[1:2:2]
		h["X-Meterr-Permissions"] = t.hPermissions
		h["X-Meterr-Environment"] = t.hEnvironment
		// Envoy's HTTP ext_authz removes the headers named here before
		// the upstream: it never sees the key.
		h["X-Envoy-Auth-Headers-To-Remove"] = hvAuthorization
	}
	// The 200 answer: built per request from the key id (a validated
	// token, so it needs no escaping) and the class's shared fragment.
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"valid":true,"key_id":"`...)
	b = append(b, d.KeyID...)
	b = append(b, '"')
	b = append(b, t.okTail...)
	if p.RequestsPerHour() == 0 {
		b = append(b, `{"unlimited":true}}`+"\n"...)
	} else {
		b = appendRateLimit(b, t.hLimit[0], remaining, win)
	}
	writeAnswer(w, http.StatusOK, b)
	*bp = b
	bufPool.Put(bp)
}

// header is one header of an answer.
type header struct{ name, value string }

// appendHeaders appends the headers of the answer besides Content-Type and
// the other headers every answer has: WWW-Authenticate, Retry-After, the
// rate-limit headers and, for an allowed forward-auth request (identity),
// the X-Meterr-* identity headers. Names are in canonical HTTP form. It
// allocates; writeDecision sets the same headers without, and tests hold the
// two to the same list.
func (s *Server) appendHeaders(hs []header, d *authz.Decision, identity bool) []header {
	switch d.Code {
	case authz.InvalidAPIKey, authz.ExpiredAPIKey:
		hs = append(hs, header{"Www-Authenticate", hvBearer[0]})
	case authz.NotReady:
		hs = append(hs, header{"Retry-After", hvRetryOneSecond[0]})
	}
	var t *classText
	if d.Authenticated() {
		t = textOf(&d.Policy)
	}
	switch d.Rate {
	case authz.RateCounted:
		rem := strconv.FormatInt(d.Remaining, 10)
		hs = append(hs,
			header{"X-Ratelimit-Limit", t.hLimit[0]},
			header{"X-Ratelimit-Remaining", rem},
			header{"X-Ratelimit-Reset", s.windows.of(d.Reset).hReset[0]},
			header{"Ratelimit-Policy", t.hPolicy[0]},
			header{"Ratelimit", `"hourly";r=` + rem + ";t=" + strconv.FormatInt(d.ResetIn, 10)})
		if secs := d.RetryAfter(); secs > 0 {
			hs = append(hs, header{"Retry-After", strconv.FormatInt(secs, 10)})
		}
	case authz.RateUnknown:
		hs = append(hs,
			header{"X-Ratelimit-Limit", t.hLimit[0]},
			header{"Ratelimit-Policy", t.hPolicy[0]},
			header{"Retry-After", hvRetryOneSecond[0]})
	}
	if identity && d.Code == authz.OK {
		hs = append(hs,
			header{"X-Meterr-Key-Id", d.KeyID},
			header{"X-Meterr-Key-Name", d.Policy.Owner()},
			header{"X-Meterr-Permissions", t.hPermissions[0]},
			header{"X-Meterr-Environment", t.hEnvironment[0]})
	}
	return hs
}
