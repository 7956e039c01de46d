package webhookserver

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"

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

// ServeHTTP implements http.Handler: the HTTP front-end. verify and check
// convert the request into a Request (httpRequest, check), Server.decide
// answers it, and writeHTTP (or, in NGINX mode, writeNginx) renders the
// Answer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == verifyPath && s.loaded.Load():
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header()["Allow"] = hvAllowVerify
			writeAnswer(w, http.StatusMethodNotAllowed, bodyMethodNotAllowed)
			return
		}
		start := s.clock.Now()
		req := s.httpRequest(r, EndpointVerify)
		a := s.decide(r.Context(), &req, start)
		s.writeHTTP(w, &a)
	case p == checkPath || strings.HasPrefix(p, checkPath+"/"):
		s.check(w, r)
	case p == verifyPath:
		// Not loaded yet: whatever the method, 503 not_ready.
		start := s.clock.Now()
		req := s.httpRequest(r, EndpointVerify)
		a := s.decide(r.Context(), &req, start)
		s.writeHTTP(w, &a)
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

// httpRequest converts r into a Request of endpoint e. The original method
// and path are worked out for the decision log only.
func (s *Server) httpRequest(r *http.Request, e Endpoint) Request {
	req := Request{Endpoint: e, Credential: credential(r.Header), RemoteAddr: r.RemoteAddr, Headers: HTTPHeaders(r.Header)}
	if s.logsDecisions() {
		req.Method, req.Path = r.Method, r.URL.Path
		if e == EndpointCheck {
			req.Method, req.Path = originalForLog(r)
		}
	}
	return req
}

// check converts a forward-auth request: the permission it requires comes
// from ?permission= or from the route rules applied to the original request
// (forward.go). ?permission= and ?mode= count only on the bare
// /v1/auth/check URL: when Envoy appends the original path, the query
// string is the client's own. Before the first full load of records every
// check is 503 not_ready, whatever it asks.
func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	start := s.clock.Now()
	req := s.httpRequest(r, EndpointCheck)
	if !s.loaded.Load() {
		a := s.decide(r.Context(), &req, start)
		s.writeHTTP(w, &a)
		return
	}
	explicit, nginx := false, false
	if r.URL.Path == checkPath && r.URL.RawQuery != "" {
		nginx = queryNginxMode(r.URL.RawQuery)
		n, present, ok := queryPermission(r.URL.RawQuery)
		if !ok {
			req.Refusal = bodyUnknownPerm
		}
		req.Required, explicit = n, present
	}
	if req.Refusal == nil && !explicit && len(s.routes) > 0 {
		need := authz.Permission(0)
		found, ok := forEachOriginal(r, func(method, path string) { need |= s.routes.match(method, path) })
		req.Required = need
		switch {
		case !ok:
			req.Refusal = bodyBadOriginal
		case !found:
			req.Refusal = bodyNoOriginal
		}
	}
	if req.Refusal != nil {
		req.Required = 0
	}
	a := s.decide(r.Context(), &req, start)
	if nginx {
		s.writeNginx(w, &a)
		return
	}
	s.writeHTTP(w, &a)
}

// writeHTTP renders a as the HTTP answer: its headers, and for an allowed
// forward-auth request x-envoy-auth-headers-to-remove naming the headers
// Envoy's HTTP ext_authz removes before the upstream (the key). It
// allocates nothing beyond a's own values.
func (s *Server) writeHTTP(w http.ResponseWriter, a *Answer) {
	h := w.Header()
	a.eachHeader(func(name string, v []string) { h[name] = v })
	if rm := a.remove(); rm != nil {
		h["X-Envoy-Auth-Headers-To-Remove"] = rm
	}
	if a.body != nil {
		writeAnswer(w, a.Code.Status(), a.body)
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := a.appendBody((*bp)[:0])
	writeAnswer(w, a.Code.Status(), b)
	*bp = b
	bufPool.Put(bp)
}
