package webhookserver

import (
	"context"
	"encoding/json"
	"net/netip"

	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/httpapi"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// Explanation is the answer Explain gives to a request and the facts it was
// decided on.
type Explanation struct {
	// Status is the HTTP status of the answer; Code is "ok" or its error
	// code, Type and Message the error's.
	Status  int
	Code    string
	Type    string
	Message string
	// Permissions and Environment are the key's, in an allowed answer.
	Permissions []string
	Environment string

	// The facts: the client address by the one trust rule (invalid:
	// unknown), the origin host ("" none), the permission required.
	Client     netip.Addr
	OriginHost string
	Required   authz.Permission
}

// Explain answers req as the auth server answers a request of the same
// facts, through the same path (answer.Core.Decide), and says which facts it
// used; it is how `meterr-operator whois` explains an answer. req is a
// forward-auth request: its Method and Path are the original request's,
// and when it requires no permission the route rules are applied to them
// as forward-auth applies them. entry, when set, is taken as what the index
// found for the credential (a key version known only by its id, whose key
// whois does not have).
func (s *Server) Explain(ctx context.Context, req request.Request, entry *authz.Entry) Explanation {
	if routes := s.core.Routes(); req.Required == 0 && req.Refusal == nil && len(routes) > 0 {
		if p, ok := request.OriginalPath(req.Path); ok {
			request.ForOriginal(req.Method, p, func(method, path string) { req.Required |= routes.Match(method, path) })
		} else {
			req.Refusal = httpapi.BadOriginal
		}
	}
	a := s.core.DecideKnown(ctx, &req, s.core.Now(), entry)
	x := Explanation{Status: a.Code.Status(), Code: a.Code.String(), Type: a.Code.Type(),
		Client: s.core.Client(&req), OriginHost: req.Headers.OriginHost(), Required: req.Required}
	if a.Allowed() {
		x.Permissions = append([]string{}, a.Policy.Permissions()...)
		x.Environment = a.Policy.Environment()
		return x
	}
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(a.AppendBody(nil), &body) == nil {
		x.Message = body.Error.Message
	}
	return x
}
