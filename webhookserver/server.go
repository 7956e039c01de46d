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

	"github.com/meterr/meterr-operator/internal/apikey"
)

// ServerConfig configures the HTTP handler.
type ServerConfig struct {
	// Index finds keys. Required.
	Index Index
	// Limiter counts requests; nil means a new MemoryLimiter.
	Limiter Limiter
	// Clock tells the time; nil means the real clock.
	Clock clock.PassiveClock
	// Environment, when set, refuses keys of any other environment.
	Environment string
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
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
		c.Limiter = NewMemoryLimiter()
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
		s.decide(w, r, 0, false, s.clock.Now())
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
// decides. ?permission= counts only on the bare /v1/auth/check URL: when
// Envoy appends the original path, the query string is the client's own.
func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	start := s.clock.Now()
	need, explicit := permission(0), false
	if r.URL.Path == checkPath && r.URL.RawQuery != "" {
		n, present, ok := queryPermission(r.URL.RawQuery)
		if !ok {
			s.invalidRequest(w, r, bodyUnknownPerm, start)
			return
		}
		need, explicit = n, present
	}
	if !explicit && len(s.routes) > 0 {
		found, ok := forEachOriginal(r, func(method, path string) { need |= s.routes.match(method, path) })
		if !ok {
			s.invalidRequest(w, r, bodyBadOriginal, start)
			return
		}
		if !found {
			s.invalidRequest(w, r, bodyNoOriginal, start)
			return
		}
	}
	s.decide(w, r, need, true, start)
}

func (s *Server) invalidRequest(w http.ResponseWriter, r *http.Request, body []byte, start time.Time) {
	writeAnswer(w, http.StatusBadRequest, body)
	s.observe(r, codeInvalidRequest, 0, start)
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request, need permission, check bool, start time.Time) {
	s.observe(r, s.authorize(w, r, need, check, start), need, start)
}

// observe counts a decision and, with --log-decisions, logs it.
func (s *Server) observe(r *http.Request, c code, need permission, start time.Time) {
	s.metrics.decisions[c].Inc()
	s.metrics.duration.Observe(s.clock.Since(start).Seconds())
	if s.dlog != nil {
		s.logDecision(r, c, need)
	}
}

// authorize decides a request and writes the answer: authenticate (401),
// restrictions (403, not counted), hourly limit (429), permission (403,
// counted).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, need permission, check bool, now time.Time) code {
	h := w.Header()
	tok, ok := bearerToken(r.Header["Authorization"])
	// Shape and checksum first: a malformed key costs no hash and no lookup.
	if !ok || apikey.Parse(tok) != nil {
		return unauthorized(w, codeInvalidAPIKey, bodyInvalidAPIKey)
	}
	e, ok := s.index.Lookup(apikey.HashOf(tok))
	// A disabled key gets exactly the answer of an unknown one.
	if !ok || e.Policy.disabled {
		return unauthorized(w, codeInvalidAPIKey, bodyInvalidAPIKey)
	}
	if e.expired(now) {
		return unauthorized(w, codeExpiredAPIKey, bodyExpiredAPIKey)
	}
	p := &e.Policy
	var a *answerValues
	if p.limit > 0 || check {
		a = new(answerValues)
	}

	if c, body, ip := s.restrict(r, p); c != codeOK {
		// Not counted, so a stolen key used from elsewhere cannot exhaust
		// the quota; the headers show where the key stands.
		if p.limit > 0 {
			if remaining, reset := s.limiter.Peek(r.Context(), p.LimitID(), p.limit, now); !reset.IsZero() {
				setRateLimitHeaders(h, a, p, remaining, s.windows.of(reset), now, false)
			}
		}
		if c == codeIPNotAllowed {
			writeIPNotAllowed(w, ip)
		} else {
			writeAnswer(w, codes[c].status, body)
		}
		return c
	}

	var remaining string
	var window *windowText
	if p.limit > 0 {
		n, reset, ok := s.limiter.Take(r.Context(), p.LimitID(), p.limit, now)
		if !ok && reset.IsZero() {
			// The shared count is unreachable and the limiter fails closed:
			// the limit is known, the count is not.
			h["X-Ratelimit-Limit"] = p.hLimit
			h["Ratelimit-Policy"] = p.hPolicy
			h["Retry-After"] = hvRetryOneSecond
			writeAnswer(w, http.StatusServiceUnavailable, bodyLimitUnavailable)
			return codeRateLimitUnavailable
		}
		window = s.windows.of(reset)
		remaining = setRateLimitHeaders(h, a, p, n, window, now, !ok)
		if !ok {
			writeAnswer(w, http.StatusTooManyRequests, bodyRateLimited)
			return codeRateLimitExceeded
		}
	}

	if need != 0 && !p.perms.grants(need) {
		writeAnswer(w, http.StatusForbidden, bodyInsufficient[need])
		return codeInsufficientPermissions
	}

	if check {
		a.id = [2]string{e.KeyID, p.Owner()}
		h["X-Meterr-Key-Id"] = a.id[0:1:1]
		h["X-Meterr-Key-Name"] = a.id[1:2:2]
		h["X-Meterr-Permissions"] = p.hPermissions
		h["X-Meterr-Environment"] = p.hEnvironment
	}
	// The 200 answer: built per request from the key id (a validated
	// token, so it needs no escaping) and the policy's shared fragment.
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"valid":true,"key_id":"`...)
	b = append(b, e.KeyID...)
	b = append(b, '"')
	b = append(b, p.okTail...)
	if p.limit == 0 {
		b = append(b, `{"unlimited":true}}`+"\n"...)
	} else {
		b = appendRateLimit(b, p.hLimit[0], remaining, window)
	}
	writeAnswer(w, http.StatusOK, b)
	*bp = b
	bufPool.Put(bp)
	return codeOK
}

// restrict applies the key's restrictions in order: environment, client IP,
// domain. An IP refusal has no body but the address it saw (see
// writeIPNotAllowed).
func (s *Server) restrict(r *http.Request, p *Policy) (code, []byte, netip.Addr) {
	if s.env != "" && p.environment != s.env {
		return codeEnvironmentMismatch, s.envMismatchBody, netip.Addr{}
	}
	if p.ipRestricted {
		if ip := clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"], s.trusted); !p.allowsIP(ip) {
			return codeIPNotAllowed, nil, ip
		}
	}
	if p.domainRestricted && !p.allowsHost(requestHost(r.Header)) {
		return codeDomainNotAllowed, bodyDomainNotAllowed, netip.Addr{}
	}
	return codeOK, nil, netip.Addr{}
}

func unauthorized(w http.ResponseWriter, c code, body []byte) code {
	w.Header()["Www-Authenticate"] = hvBearer
	writeAnswer(w, http.StatusUnauthorized, body)
	return c
}
