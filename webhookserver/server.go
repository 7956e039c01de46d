package webhookserver

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
)

// ServerConfig configures the HTTP handler.
type ServerConfig struct {
	// Index finds keys. Required.
	Index Index
	// Limiter counts requests; nil means a new ratelimit.Memory.
	Limiter Limiter
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
	limiter Limiter
	clock   clock.PassiveClock
	env     string
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
		limiter:         c.Limiter,
		clock:           c.Clock,
		env:             c.Environment,
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

// Ready reports what /readyz answers.
func (s *Server) Ready() bool { return s.ready.Load() }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case (p == verifyPath || p == checkPath || strings.HasPrefix(p, checkPath+"/")) && !s.loaded.Load():
		w.Header()["Retry-After"] = hvRetryOneSecond
		writeAnswer(w, http.StatusServiceUnavailable, bodyNotLoaded)
		s.observe(r, codeNotReady, 0, s.clock.Now())
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
	need, explicit, nginx := permission(0), false, false
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
	d := invalidRequest(body, 0)
	s.writeDecision(w, &d, true, nginx)
	s.observe(r, codeInvalidRequest, 0, start)
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request, need permission, check, nginx bool, start time.Time) {
	var cred string
	if v := r.Header["Authorization"]; len(v) == 1 {
		cred = v[0]
	}
	d := s.decideFrom(r.Context(), DecisionInput{Credential: cred, Required: need, Now: start}, r)
	s.writeDecision(w, &d, check, nginx)
	s.observe(r, d.code, need, start)
}

// observe counts a decision and, with --log-decisions, logs it.
func (s *Server) observe(r *http.Request, c code, need permission, start time.Time) {
	s.metrics.decisions[c].Inc()
	s.metrics.duration.Observe(s.clock.Since(start).Seconds())
	if s.dlog != nil {
		s.logDecision(r, c, need)
	}
}

// writeDecision renders d as the HTTP answer; check adds, when allowed, the
// identity headers for the upstream and asks the proxy to remove the key
// (x-envoy-auth-headers-to-remove: authorization). nginx renders a refusal
// for NGINX's auth_request (see nginxDenial). It sets what
// Decision.AppendHeaders lists, without allocating beyond one answerValues
// for the values that change per request.
func (s *Server) writeDecision(w http.ResponseWriter, d *Decision, check, nginx bool) {
	h := w.Header()
	if nginx && d.code != codeOK {
		nginxDenial(w, d)
		return
	}
	p := &d.policy
	var a *answerValues
	if d.rate == rateCounted || check && d.code == codeOK {
		a = new(answerValues)
	}
	var remaining string
	switch d.rate {
	case rateCounted:
		remaining = setRateLimitHeaders(h, a, p, d.remaining, d.window, d.resetIn, d.retryAfter)
	case rateUnknown:
		h["X-Ratelimit-Limit"] = p.hLimit
		h["Ratelimit-Policy"] = p.hPolicy
		h["Retry-After"] = hvRetryOneSecond
	}
	switch d.code {
	case codeOK:
	case codeInvalidAPIKey, codeExpiredAPIKey:
		h["Www-Authenticate"] = hvBearer
		writeAnswer(w, http.StatusUnauthorized, d.body)
		return
	case codeNotReady:
		h["Retry-After"] = hvRetryOneSecond
		writeAnswer(w, http.StatusServiceUnavailable, d.body)
		return
	default:
		bp := bufPool.Get().(*[]byte)
		b := d.AppendBody((*bp)[:0])
		writeAnswer(w, codes[d.code].status, b)
		*bp = b
		bufPool.Put(bp)
		return
	}

	if check {
		a.id = [2]string{d.KeyID, p.Owner()}
		h["X-Meterr-Key-Id"] = a.id[0:1:1]
		h["X-Meterr-Key-Name"] = a.id[1:2:2]
		h["X-Meterr-Permissions"] = p.hPermissions
		h["X-Meterr-Environment"] = p.hEnvironment
		// Envoy's HTTP ext_authz removes the headers named here before
		// the upstream: it never sees the key.
		h["X-Envoy-Auth-Headers-To-Remove"] = hvAuthorization
	}
	// The 200 answer: built per request from the key id (a validated
	// token, so it needs no escaping) and the policy's shared fragment.
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"valid":true,"key_id":"`...)
	b = append(b, d.KeyID...)
	b = append(b, '"')
	b = append(b, p.okTail...)
	if p.limit == 0 {
		b = append(b, `{"unlimited":true}}`+"\n"...)
	} else {
		b = appendRateLimit(b, p.hLimit[0], remaining, d.window)
	}
	writeAnswer(w, http.StatusOK, b)
	*bp = b
	bufPool.Put(bp)
}
