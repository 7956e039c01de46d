// Package nginx is the auth server's front-end for NGINX's auth_request
// (NGINX mode, ?mode=nginx on the bare /v1/auth/check URL): the HTTP
// front-end converts the request; this package renders the Answer.
package nginx

import (
	"bytes"
	"net/http"
	"strconv"

	"github.com/meterr/meterr-operator/webhookserver/answer"
)

// NGINX's auth_request passes on only 2xx, 401 and 403 from the auth server
// and turns any other status into 500. In NGINX mode (?mode=nginx on the bare
// /v1/auth/check URL) a refusal therefore keeps 401 for authentication
// failures and is 403 otherwise, and carries what the real answer would be in
// headers the NGINX configuration turns back into it (see
// docs/integrations/nginx/nginx.conf):
//
//	X-Meterr-Status:        the real status (401, 403, 429, 400, 503)
//	X-Meterr-Error-Code:    the error code ("rate_limit_exceeded")
//	X-Meterr-Error-Type:    the error type ("rate_limit_error")
//	X-Meterr-Error-Message: the message, JSON-escaped (it goes into the
//	                        error body as it is)
//
// besides Retry-After, WWW-Authenticate and the rate-limit headers of the
// real answer. The body is the real answer's.

// Write renders a for NGINX's auth_request: the HTTP answer when
// allowed; a refusal as 401 or 403 with the real answer's headers and body,
// and its status, code, type and message in X-Meterr-* headers.
func Write(w http.ResponseWriter, a *answer.Answer) {
	if a.Allowed() {
		answer.WriteHTTP(w, a)
		return
	}
	h := w.Header()
	a.EachHeader(func(name string, v []string) { h[name] = v })
	status := a.Code.Status()
	b := a.AppendBody(nil)
	h["X-Meterr-Status"] = []string{strconv.Itoa(status)}
	h["X-Meterr-Error-Code"] = []string{a.Code.String()}
	h["X-Meterr-Error-Type"] = []string{a.Code.Type()}
	h["X-Meterr-Error-Message"] = []string{jsonMessage(b)}
	if status != http.StatusUnauthorized {
		status = http.StatusForbidden
	}
	answer.Write(w, status, b)
}

// jsonMessage returns the message of an error body as it stands in the JSON,
// escaped: answer.ErrorBody escapes every control character, so it is a valid
// header value too.
func jsonMessage(body []byte) string {
	const start, end = `,"message":"`, `","code":`
	i := bytes.Index(body, []byte(start))
	if i < 0 {
		return ""
	}
	rest := body[i+len(start):]
	j := bytes.Index(rest, []byte(end))
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}
