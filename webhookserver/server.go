package webhookserver

import (
	"fmt"
	"net/http"
	"net/netip"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/extauthz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/httpapi"
	"github.com/meterr/meterr-operator/webhookserver/ratelimit"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// Index finds the entry for a key hash (answer.Index).
type Index = answer.Index

// Route is one --route rule (request.Route).
type Route = request.Route

// ServerConfig configures the auth server's front-ends.
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
	// CredentialSources are where a request may carry its key; nil is
	// Authorization: Bearer alone.
	CredentialSources request.Sources
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

// --log-decisions values.
const (
	LogDecisionsOff    = answer.LogDecisionsOff
	LogDecisionsDenied = answer.LogDecisionsDenied
	LogDecisionsAll    = answer.LogDecisionsAll
)

// Server is the auth server: the one decision path (answer.Core) and its
// front-ends. It is the HTTP handler (httpapi); NewGRPCServer serves its
// ext_authz front-end (extauthz).
type Server struct {
	core     *answer.Core
	httpAPI  *httpapi.Handler
	extAuthz *extauthz.Server
}

// NewServer returns the server for c. It is not ready (/readyz answers 503)
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
	routes, err := request.CompileRoutes(c.Routes)
	if err != nil {
		return nil, err
	}
	core, err := answer.New(answer.Config{
		Index:        c.Index,
		Limiter:      c.Limiter,
		Clock:        c.Clock,
		Environment:  c.Environment,
		Trust:        request.Trust{Proxies: c.TrustedProxies, Hops: c.TrustedHops},
		Routes:       routes,
		Sources:      c.CredentialSources,
		Registerer:   c.Registerer,
		LogDecisions: c.LogDecisions,
		Log:          c.Log,
	})
	if err != nil {
		return nil, err
	}
	return &Server{core: core, httpAPI: httpapi.New(core), extAuthz: extauthz.New(core)}, nil
}

// SetReady sets what /readyz answers.
// Decisions asked for before the first SetReady(true) get 503 not_ready
// rather than a 401 for a key that simply has not been loaded yet.
func (s *Server) SetReady(ready bool) { s.core.SetReady(ready) }

// ServeHTTP implements http.Handler: the HTTP front-end (httpapi.Handler).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.httpAPI.ServeHTTP(w, r) }

// Handler is the HTTP front-end itself, which Run serves.
func (s *Server) Handler() http.Handler { return s.httpAPI }
