// Package answer is the auth server's one decision path and its answer:
// Core.Decide takes a request.Request, looks its key up, decides
// (authz.Decider.Decide), counts and observes the decision (metrics and
// decision log, once for every front-end), and returns one Answer: status,
// error code, headers to add and remove, body, rate-limit state. Everything
// an answer shows is formatted here once (answer.go: the error bodies, the
// texts of a policy class and of a window) and rendered from its parts
// (render.go: Answer.EachHeader, Answer.Remove, Answer.AppendBody; WriteHTTP
// for HTTP). The front-ends import it; it imports none of them.
package answer

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// Index finds the entry for a key hash. It is all the auth server's
// front-ends know of where keys come from: implementations must be safe for
// concurrent use, must not block on I/O and should allocate little
// (index.Index, the one the auth server uses, allocates only the key id's
// string).
type Index interface {
	Lookup(h apikey.Hash) (authz.Entry, bool)
}

// UsageMarker is implemented by an Index that keeps each version's last
// accepted use: MarkUsed records a use by hash when the Entry's own
// authz.Use went stale between the lookup and the decision (the record was
// reloaded meanwhile). index.Index implements it.
type UsageMarker interface {
	MarkUsed(h apikey.Hash, sec int64) bool
}

// Config configures a Core. Every field but Environment, LogDecisions and
// Log is required; the process (webhookserver.NewServer) fills in defaults.
type Config struct {
	Index       Index
	Limiter     authz.Limiter
	Clock       clock.PassiveClock
	Environment string
	// Trust is the one trust rule; Routes the compiled --route rules, which
	// the front-ends apply when converting a request.
	Trust  request.Trust
	Routes request.Routes
	// Sources are where a request may carry its key (--credential-sources);
	// nil is request.DefaultSources.
	Sources request.Sources
	// Registerer receives the decision metrics.
	Registerer prometheus.Registerer
	// LogDecisions is LogDecisionsOff (or empty), LogDecisionsDenied or
	// LogDecisionsAll (--log-decisions); Log receives the lines.
	LogDecisions string
	Log          logr.Logger
}

// Core is the one path of every front-end: Decide looks a Request's key up,
// decides, counts and observes the decision, and returns its Answer. It also
// holds what the front-ends read to convert a request (Trust, Routes,
// LogsDecisions, Now) and the readiness.
type Core struct {
	index   Index
	decider authz.Decider
	clock   clock.PassiveClock
	trust   request.Trust
	routes  request.Routes
	sources request.Sources
	metrics *metrics
	// dlog is nil unless decisions are logged.
	dlog  *decisionLog
	ready atomic.Bool
	// loaded is set with the first SetReady(true) and never cleared: a
	// server draining for shutdown still decides correctly.
	loaded atomic.Bool

	envMismatchBody []byte
	windows         windowTexts
}

// New returns the Core of c, not ready until SetReady(true).
func New(c Config) (*Core, error) {
	if err := ValidateLogDecisions(c.LogDecisions); err != nil {
		return nil, fmt.Errorf("auth server: decision log: %w", err)
	}
	if c.Sources == nil {
		c.Sources = request.DefaultSources
	}
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, err
	}
	return &Core{
		index:   c.Index,
		decider: authz.Decider{Environment: c.Environment, Limiter: c.Limiter},
		clock:   c.Clock,
		trust: request.Trust{Proxies: append([]netip.Prefix(nil), c.Trust.Proxies...),
			Hops: c.Trust.Hops},
		routes:          c.Routes,
		sources:         c.Sources,
		metrics:         m,
		dlog:            newDecisionLog(c.LogDecisions, c.Log, m.decisionLogsDropped),
		envMismatchBody: environmentMismatchBody(c.Environment),
	}, nil
}

// SetReady sets the readiness (/readyz, the gRPC health service).
// Decisions asked for before the first SetReady(true) get 503 not_ready
// rather than a 401 for a key that simply has not been loaded yet.
func (s *Core) SetReady(ready bool) {
	if ready {
		s.loaded.Store(true)
	}
	s.ready.Store(ready)
}

// Ready says whether the server takes traffic.
func (s *Core) Ready() bool { return s.ready.Load() }

// Loaded says whether the key records have been loaded once: before, every
// decision is 503 not_ready.
func (s *Core) Loaded() bool { return s.loaded.Load() }

// Now is the time by the one clock of every decision: a front-end takes it
// when it receives a request.
func (s *Core) Now() time.Time { return s.clock.Now() }

// Routes are the --route rules, which a front-end applies to the original
// request when nothing else says which permission it requires.
func (s *Core) Routes() request.Routes { return s.routes }

// Sources are where a request may carry its key (--credential-sources):
// a front-end reads the credential through them.
func (s *Core) Sources() request.Sources { return s.sources }

// Client returns the address req comes from, by the one trust rule.
func (s *Core) Client(req *request.Request) netip.Addr { return s.trust.Client(req) }

// Decide answers req: it looks the key up, decides (authz.Decider.Decide),
// counts and observes the decision (metrics, decision log), once for every
// front-end. now is when the front-end received the request.
func (s *Core) Decide(ctx context.Context, req *request.Request, now time.Time) Answer {
	return s.decide(ctx, req, now, nil)
}

// DecideKnown is Decide with known taken as what the index found for the
// credential, when the credential itself finds nothing: how whois explains
// a key version it knows only by its id (webhookserver.Server.Explain).
func (s *Core) DecideKnown(ctx context.Context, req *request.Request, now time.Time, known *authz.Entry) Answer {
	return s.decide(ctx, req, now, known)
}

func (s *Core) decide(ctx context.Context, req *request.Request, now time.Time, known *authz.Entry) (a Answer) {
	var in authz.Input
	var h apikey.Hash
	looked, byToken := false, false
	switch {
	case req.Refusal != nil:
		a.Decision = authz.Decision{Code: authz.InvalidRequest}
	case !s.loaded.Load():
		// Before the first full load of records: a 503 the client retries,
		// never a 401 for a key that has not been loaded yet.
		a.Decision = authz.Decision{Code: authz.NotReady, Required: req.Required}
	default:
		in = authz.Input{Required: req.Required, Now: now}
		// Shape and checksum first: a malformed key costs no hash and no
		// lookup.
		if tok, ok := req.Token(); ok && apikey.Parse(tok) == nil {
			h, byToken = apikey.HashOf(tok), true
			in.Entry, in.Found = s.index.Lookup(h)
		} else if known != nil {
			in.Entry, in.Found = *known, true
		}
		looked = true
		if in.NeedsClient() {
			in.ClientIP = s.trust.Client(req)
			in.OriginHost = req.Headers.OriginHost()
		}
		a.Decision = s.decider.Decide(ctx, &in)
		if byToken {
			s.markUsed(&a, &in, h, now)
		}
	}
	a.from = req.From
	s.complete(&a, req.Endpoint != request.EndpointVerify, req.Refusal)
	s.observe(req, &a, &in, looked, now)
	return a
}

// markUsed records an accepted request's use of its key version (and
// nothing for a refused one): a store at most once a second per version,
// without allocation or lock (authz.Use.Mark); by hash under the index's
// read lock only when the version's record was reloaded since the lookup.
func (s *Core) markUsed(a *Answer, in *authz.Input, h apikey.Hash, now time.Time) {
	if !in.Found || !a.Allowed() {
		return
	}
	if sec := now.Unix(); !in.Entry.Use.Mark(sec) {
		if m, ok := s.index.(UsageMarker); ok {
			m.MarkUsed(h, sec)
		}
	}
}

// AnswerOf is the Answer of a decision made elsewhere: identity for a
// forward-auth endpoint, refusal the front-end's own body
// (invalid_request). Tests render a decision through it.
func (s *Core) AnswerOf(d *authz.Decision, identity bool, refusal []byte) Answer {
	a := Answer{Decision: *d}
	s.complete(&a, identity, refusal)
	return a
}
