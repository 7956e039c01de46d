package webhookserver

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meterr/meterr-operator/webhookserver/answer"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/frontend/extauthz"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// The names the tests of the whole server read its rooms by: thin wrappers
// over the one path (request.Request, answer.Core.Decide, answer.Answer)
// and the front-ends' exported conversions, so that these tests hold the
// split code to the old answers unchanged.

// decide is the one path.
func (s *Server) decide(ctx context.Context, r *request.Request, now time.Time) answer.Answer {
	return s.core.Decide(ctx, r, now)
}

// client is the one trust rule.
func (s *Server) client(r *request.Request) netip.Addr { return s.core.Client(r) }

// httpRequest is the HTTP front-end's conversion.
func (s *Server) httpRequest(r *http.Request, e request.Endpoint) request.Request {
	return s.httpAPI.Request(r, e)
}

// checkRequest is the gRPC front-end's conversion.
func (s *Server) checkRequest(ctx context.Context, req *authv3.CheckRequest) request.Request {
	return s.extAuthz.Request(ctx, req)
}

// grpcCaller is the gRPC front-end's reading of its peer.
func (s *Server) grpcCaller(ctx context.Context) (netip.Addr, bool) { return s.extAuthz.Caller(ctx) }

// decideCheckRequest converts and decides a CheckRequest; body is the
// answer of a request the front-end cannot read (invalid_request), else nil.
func (s *Server) decideCheckRequest(ctx context.Context, req *authv3.CheckRequest, now time.Time) (authz.Decision, []byte) {
	r := s.checkRequest(ctx, req)
	a := s.decide(ctx, &r, now)
	return a.Decision, r.Refusal
}

// checkResponse renders d (with body, see decideCheckRequest) as Check does.
func (s *Server) checkResponse(d *authz.Decision, body []byte) *authv3.CheckResponse {
	a := s.core.AnswerOf(d, true, body)
	return extauthz.Response(&a)
}

// decisionCount is meterr_auth_decisions_total{code=code} in reg.
func decisionCount(t *testing.T, reg prometheus.Gatherer, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meterr_auth_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no decisions{code=%q}", code)
	return 0
}
