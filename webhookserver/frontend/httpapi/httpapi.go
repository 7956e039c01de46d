// Package httpapi is the auth server's HTTP front-end: GET /v1/auth/verify
// and forward authentication on /v1/auth/check[/<original path>] (Envoy's
// HTTP ext_authz, Envoy Gateway, Istio, Traefik, Caddy, ingress-nginx,
// NGINX auth_request), plus /healthz and /readyz. It converts a net/http
// request into one request.Request, the Core answers it, and it renders the
// Answer as HTTP (answer.WriteHTTP; nginx.Write in NGINX mode).
package httpapi

import (
	"net/http"
	"strings"

	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/nginx"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// The front-end's own answers: its refusals of a request it cannot read
// (invalid_request) and the health endpoints'. None of them depends on the
// request, so none can echo a key.
var (
	// BadOriginal refuses a forward-auth request whose description of the
	// original request is malformed.
	BadOriginal     = answer.ErrorBody(authz.InvalidRequest, "The original request URI forwarded by the proxy is malformed")
	bodyUnknownPerm = answer.ErrorBody(authz.InvalidRequest, "Unknown permission in the permission parameter; use read, write or admin")
	bodyNoOriginal  = answer.ErrorBody(authz.InvalidRequest, "Route rules are configured but the request does not say which request it authorizes: "+
		"append the original path to /v1/auth/check or send X-Forwarded-Uri, X-Original-URL or X-Original-URI")
	bodyNotFound         = answer.ErrorBody(authz.InvalidRequest, "Not found; the endpoints are /v1/auth/verify and /v1/auth/check")
	bodyMethodNotAllowed = answer.ErrorBody(authz.InvalidRequest, "Method not allowed; /v1/auth/verify takes GET or HEAD")

	bodyHealthy  = []byte(`{"status":"ok"}` + "\n")
	bodyReady    = []byte(`{"status":"ready"}` + "\n")
	bodyNotReady = []byte(`{"status":"not ready","message":"key records have not been loaded yet"}` + "\n")

	hvAllowVerify = []string{"GET, HEAD"}
)

// Handler is the HTTP front-end of a Core.
type Handler struct {
	core *answer.Core
}

// New returns the HTTP front-end of c.
func New(c *answer.Core) *Handler { return &Handler{core: c} }

// ServeHTTP implements http.Handler. verify and check convert the request
// into a request.Request (Request, check), the Core decides it, and
// answer.WriteHTTP (or, in NGINX mode, nginx.Write) renders the Answer.
func (s *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == request.VerifyPath && s.core.Loaded():
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header()["Allow"] = hvAllowVerify
			answer.Write(w, http.StatusMethodNotAllowed, bodyMethodNotAllowed)
			return
		}
		start := s.core.Now()
		req := s.Request(r, request.EndpointVerify)
		a := s.core.Decide(r.Context(), &req, start)
		answer.WriteHTTP(w, &a)
	case p == request.CheckPath || strings.HasPrefix(p, request.CheckPath+"/"):
		s.check(w, r)
	case p == request.VerifyPath:
		// Not loaded yet: whatever the method, 503 not_ready.
		start := s.core.Now()
		req := s.Request(r, request.EndpointVerify)
		a := s.core.Decide(r.Context(), &req, start)
		answer.WriteHTTP(w, &a)
	case p == "/healthz":
		answer.Write(w, http.StatusOK, bodyHealthy)
	case p == "/readyz":
		if s.core.Ready() {
			answer.Write(w, http.StatusOK, bodyReady)
		} else {
			answer.Write(w, http.StatusServiceUnavailable, bodyNotReady)
		}
	default:
		answer.Write(w, http.StatusNotFound, bodyNotFound)
	}
}

// Request converts r into a request.Request of endpoint e: the credential
// (from --credential-sources; a query parameter is never read here),
// the peer, the headers. The original method and path are worked out for
// the decision log only. (check adds the permission required.)
func (s *Handler) Request(r *http.Request, e request.Endpoint) request.Request {
	req := request.Request{Endpoint: e, RemoteAddr: r.RemoteAddr, Headers: request.HTTPHeaders(r.Header)}
	req.Credential, req.From = s.core.Sources().FromHTTP(r.Header)
	if s.core.LogsDecisions() {
		req.Method, req.Path = r.Method, r.URL.Path
		if e == request.EndpointCheck {
			req.Method, req.Path = request.OriginalForLog(r)
		}
	}
	return req
}

// check converts a forward-auth request: the permission it requires comes
// from ?permission= or from the route rules applied to the original request
// (request.ForEachOriginal). ?permission= and ?mode= count only on the bare
// /v1/auth/check URL: when Envoy appends the original path, the query
// string is the client's own. Before the first full load of records every
// check is 503 not_ready, whatever it asks.
func (s *Handler) check(w http.ResponseWriter, r *http.Request) {
	start := s.core.Now()
	req := s.Request(r, request.EndpointCheck)
	if !s.core.Loaded() {
		a := s.core.Decide(r.Context(), &req, start)
		answer.WriteHTTP(w, &a)
		return
	}
	explicit, nginxMode := false, false
	if r.URL.Path == request.CheckPath && r.URL.RawQuery != "" {
		nginxMode = nginxQuery(r.URL.RawQuery)
		n, present, ok := request.QueryPermission(r.URL.RawQuery)
		if !ok {
			req.Refusal = bodyUnknownPerm
		}
		req.Required, explicit = n, present
	}
	if routes := s.core.Routes(); req.Refusal == nil && !explicit && len(routes) > 0 {
		need := authz.Permission(0)
		found, ok := request.ForEachOriginal(r, func(method, path string) { need |= routes.Match(method, path) })
		req.Required = need
		switch {
		case !ok:
			req.Refusal = BadOriginal
		case !found:
			req.Refusal = bodyNoOriginal
		}
	}
	if req.Refusal != nil {
		req.Required = 0
	}
	a := s.core.Decide(r.Context(), &req, start)
	if nginxMode {
		nginx.Write(w, &a)
		return
	}
	answer.WriteHTTP(w, &a)
}

// nginxQuery reports whether a raw query asks for NGINX mode (nginx.Write
// renders the answer).
func nginxQuery(rawQuery string) bool {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		if kv == "mode=nginx" {
			return true
		}
	}
	return false
}
