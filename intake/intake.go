// Package intake serves the endpoints secret scanners call when they find a
// meterr API key: GitLab's Token Revocation API (GET
// /v1/revocable_token_types, POST /v1/revoke_tokens) and GitHub's secret
// scanning partner format (POST /v1/leaks/github). Each intake is off unless
// configured; each request is rate-limited and size-limited before it is
// authenticated, and nothing is revoked for a request that does not
// authenticate. Tokens are never logged or kept: a token that is not a key of
// this cluster is answered (GitHub: false_positive) and forgotten.
//
// The package knows nothing of Kubernetes: a Revoker files the revocations
// (internal/revocation.Cluster in the manager).
package intake

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Outcome is what a Revoker did with one reported token.
type Outcome int

const (
	// NotOurs: not a key of this cluster (or not a key at all).
	NotOurs Outcome = iota
	// Revoked: a revocation request was filed with the owner.
	Revoked
	// AlreadyRevoked: the version had been revoked before.
	AlreadyRevoked
)

// Report is one token a scanner reported.
type Report struct {
	Token    string
	Location string
}

// Revoker revokes reported tokens by the token itself, wherever they were
// issued. It returns one Outcome per report, in order.
type Revoker interface {
	Revoke(ctx context.Context, source string, reports []Report) ([]Outcome, error)
}

// Options configure the intakes.
type Options struct {
	// Revoker files the revocations. Required.
	Revoker Revoker
	// GitLabToken returns the pre-shared token GitLab sends in
	// Authorization; nil turns the GitLab intake off. It is called on each
	// request, so a rotated Secret takes effect without a restart.
	GitLabToken func() ([]byte, error)
	// GitHubKeys returns GitHub's public keys by key identifier; nil turns
	// the GitHub intake off. Called on each request (a ConfigMap update
	// takes effect without a restart).
	GitHubKeys func() (map[string]PublicKey, error)
	// MaxBodyBytes bounds a request body; default 1 MiB.
	MaxBodyBytes int64
	// MaxTokens bounds the tokens of one request; default 1000.
	MaxTokens int
	// Rate and Burst bound requests per second to all intakes together,
	// counted before authentication; default 5 and 20.
	Rate  float64
	Burst int
	// Registerer receives the intakes' metrics; nil: none.
	Registerer prometheus.Registerer
	// Log receives one line per request (outcome counts, never a token).
	Log logr.Logger
}

// Defaults.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultMaxTokens    = 1000
	DefaultRate         = 5
	DefaultBurst        = 20
)

// GitLabTokenType is the token type the GitLab intake declares: GitLab's
// secrets analyzer names a finding "gitleaks_rule_id_" + its rule id, and
// docs/secret-scanning.md's ruleset gives our rule the id meterr_api_key.
const GitLabTokenType = "gitleaks_rule_id_meterr_api_key" //nolint:gosec // a token type's name, not a credential

// Paths of the intakes.
const (
	PathGitLabTypes  = "/v1/revocable_token_types"
	PathGitLabRevoke = "/v1/revoke_tokens"
	PathGitHub       = "/v1/leaks/github"
)

// Server is the intakes' HTTP handler.
type Server struct {
	o        Options
	limiter  *rate.Limiter
	requests *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	mux      *http.ServeMux
}

// New returns the intakes' handler.
func New(o Options) (*Server, error) {
	if o.Revoker == nil {
		return nil, errors.New("intake: a Revoker is required")
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = DefaultMaxTokens
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	s := &Server{o: o, limiter: rate.NewLimiter(rate.Limit(o.Rate), o.Burst), mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meterr_leak_intake_requests_total",
			Help: "Requests to the secret-scanning intakes, by intake (gitlab, github) and HTTP status.",
		}, []string{"intake", "status"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meterr_leak_intake_tokens_total",
			Help: "Tokens reported to the secret-scanning intakes, by intake and outcome (revoked, already_revoked, not_ours).",
		}, []string{"intake", "outcome"}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.requests, s.tokens} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	if o.GitLabToken != nil {
		s.mux.HandleFunc(PathGitLabTypes, s.gitlabTypes)
		s.mux.HandleFunc(PathGitLabRevoke, s.gitlabRevoke)
	}
	if o.GitHubKeys != nil {
		s.mux.HandleFunc(PathGitHub, s.github)
	}
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// allow applies the rate limit; a refused request gets 429 and Retry-After.
func (s *Server) allow(w http.ResponseWriter, intake string) bool {
	if s.limiter.Allow() {
		return true
	}
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(1/s.o.Rate)))))
	s.fail(w, intake, http.StatusTooManyRequests, "rate_limit_exceeded", "too many requests; retry later")
	return false
}

// fail writes the project's error JSON.
func (s *Server) fail(w http.ResponseWriter, intake string, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	typ := "invalid_request_error"
	switch status {
	case http.StatusUnauthorized:
		typ = "authentication_error"
	case http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case http.StatusInternalServerError, http.StatusServiceUnavailable:
		typ = "api_error"
	}
	s.writeJSON(w, intake, status, map[string]any{"error": map[string]string{"type": typ, "code": code, "message": msg}})
}

func (s *Server) writeJSON(w http.ResponseWriter, intake string, status int, v any) {
	s.requests.WithLabelValues(intake, strconv.Itoa(status)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// revoke calls the Revoker and holds it to one outcome per report.
func (s *Server) revoke(r *http.Request, source string, reports []Report) ([]Outcome, error) {
	out, err := s.o.Revoker.Revoke(r.Context(), source, reports)
	if err == nil && len(out) != len(reports) {
		err = errors.New("intake: the revoker answered " + strconv.Itoa(len(out)) + " outcomes for " + strconv.Itoa(len(reports)) + " tokens")
	}
	return out, err
}

func (s *Server) count(intake string, out []Outcome) (revoked, already, notOurs int) {
	for _, o := range out {
		switch o {
		case Revoked:
			revoked++
		case AlreadyRevoked:
			already++
		default:
			notOurs++
		}
	}
	s.tokens.WithLabelValues(intake, "revoked").Add(float64(revoked))
	s.tokens.WithLabelValues(intake, "already_revoked").Add(float64(already))
	s.tokens.WithLabelValues(intake, "not_ours").Add(float64(notOurs))
	return
}

// readBody reads at most MaxBodyBytes; a longer body is an error
// (*http.MaxBytesError).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes))
}

// bodyError answers a body that could not be read: too large (413) or cut.
func (s *Server) bodyError(w http.ResponseWriter, intake string, err error) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		s.fail(w, intake, http.StatusRequestEntityTooLarge, "request_too_large",
			"the body is larger than "+strconv.FormatInt(s.o.MaxBodyBytes, 10)+" bytes")
		return
	}
	s.fail(w, intake, http.StatusBadRequest, "invalid_request", "the body could not be read")
}
