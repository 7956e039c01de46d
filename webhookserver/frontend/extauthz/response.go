package extauthz

import (
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	grpccodes "google.golang.org/grpc/codes"

	"github.com/meterr/meterr-operator/webhookserver/answer"
)

// CodeOf maps an answer's HTTP status to the status of the CheckResponse
// (not of the call, which succeeds): Envoy allows on OK only and answers the
// client with denied_response.
func CodeOf(status int) grpccodes.Code {
	switch status {
	case http.StatusOK:
		return grpccodes.OK
	case http.StatusUnauthorized:
		return grpccodes.Unauthenticated
	case http.StatusForbidden:
		return grpccodes.PermissionDenied
	case http.StatusTooManyRequests:
		return grpccodes.ResourceExhausted
	case http.StatusBadRequest:
		return grpccodes.InvalidArgument
	default:
		return grpccodes.Unavailable
	}
}

// Response renders a as a CheckResponse: allowed, the identity and
// rate-limit headers for the upstream (overwriting any the client sent),
// the rate-limit headers for the client, and the key's header (or query
// parameter) removed;
// denied, the HTTP answer's status, headers and error body.
func Response(a *answer.Answer) *authv3.CheckResponse {
	hs := make([]header, 0, 12)
	a.EachHeader(func(name string, v []string) { hs = append(hs, header{name, v[0]}) })
	if a.Allowed() {
		opts := headerOptions(hs, nil)
		ok := &authv3.OkHttpResponse{HeadersToRemove: a.Remove(), QueryParametersToRemove: a.RemoveQuery(), Headers: opts}
		// The client gets the rate-limit headers, never the identity.
		for _, o := range opts {
			if !strings.HasPrefix(o.Header.Key, "x-meterr-") {
				ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, o)
			}
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(grpccodes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}
	status := a.Code.Status()
	denied := &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Body:    string(a.AppendBody(nil)),
		Headers: headerOptions(hs, common[:]),
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(CodeOf(status)), Message: a.Code.String()},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
}

// header is one header of an answer, for a rendering that lists them.
type header struct{ name, value string }

// common are the headers every answer carries (answer.Common).
var common = func() (c [len(answer.Common)]header) {
	for i, h := range answer.Common {
		c[i] = header{h.Name, h.Value}
	}
	return c
}()

// headerOptions converts first and then hs into header options that
// overwrite, in three allocations.
func headerOptions(hs, first []header) []*corev3.HeaderValueOption {
	n := len(first) + len(hs)
	opts := make([]corev3.HeaderValueOption, n)
	vals := make([]corev3.HeaderValue, n)
	out := make([]*corev3.HeaderValueOption, n)
	for i := range n {
		h := header{}
		if i < len(first) {
			h = first[i]
		} else {
			h = hs[i-len(first)]
		}
		vals[i].Key, vals[i].Value = strings.ToLower(h.name), h.value
		opts[i].Header = &vals[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}
