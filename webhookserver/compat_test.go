package webhookserver

import (
	"context"
	"net/http"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// The names older tests and fuzz targets read the front-ends by, kept as
// thin wrappers over the one path (Request, Server.decide, Answer), so that
// those tests hold the new code to the old answers unchanged.

// requestHost is the origin rule on net/http's headers.
func requestHost(h http.Header) string { return HTTPHeaders(h).originHost() }

// decideCheckRequest converts and decides a CheckRequest; body is the
// answer of a request the front-end cannot read (invalid_request), else nil.
func (s *Server) decideCheckRequest(ctx context.Context, req *authv3.CheckRequest, now time.Time) (authz.Decision, []byte) {
	r := s.checkRequest(ctx, req)
	a := s.decide(ctx, &r, now)
	return a.Decision, r.Refusal
}

// checkResponse renders d (with body, see decideCheckRequest) as Check does.
func (s *Server) checkResponse(d *authz.Decision, body []byte) *authv3.CheckResponse {
	a := s.answerOf(d, true, body)
	return checkAnswer(&a)
}
