package meterrkey

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// maxErrorBody bounds how much of a 401 answer is read to find its code.
const maxErrorBody = 16 << 10

// Transport is an http.RoundTripper that authenticates the requests to its
// Origins with the Source's current key. It never modifies the caller's
// request: it sends a clone with the Authorization header set (replacing any
// the caller set).
//
// The key goes only where Origins say. A request to any other scheme, host or
// port (a redirect to another host, even a subdomain; a downgrade from https
// to http; a request made directly elsewhere with the same client) is sent
// exactly as the caller made it, without the key and without the retry below,
// so http.Client's own rule of dropping Authorization on a redirect to another
// host still holds for the caller's headers. Such requests are passed through
// rather than failed: a client may well talk to other hosts too, and what
// matters is that they never see the key. A Transport without Origins, or
// with one that does not parse, sends nothing: every RoundTrip fails with
// ErrUnbound or ErrOrigin.
//
// On a 401 answer from an origin whose JSON error code is expired_api_key or
// invalid_api_key (the key was rotated out, or its record is gone), it looks
// at the key file again, and reads it only if it changed since it was last
// read (so a crowd of refusals costs one read per change, and none when
// nothing changed); if the key changed and the request's body can be
// sent again (no body, or Request.GetBody set, as http.NewRequest does for
// bytes, strings and bytes.Buffer bodies), it sends the request once more
// with the new key and returns that answer. Otherwise the 401 is returned,
// its body intact (a request whose body cannot be replayed is not retried,
// but the file is still looked at, for the next requests).
//
// Set the fields before the first request and do not change them afterwards.
type Transport struct {
	// Source supplies the key; required.
	Source *Source
	// Origins are where the key may be sent, each "scheme://host" or
	// "scheme://host:port" (an optional trailing "/"; no path, query or
	// user info), such as "https://api.meterr.ai"; required. A request
	// gets the key only if its URL has one of these schemes, hosts and
	// ports exactly: the host compared in ASCII without regard to case,
	// the port defaulting to 443 for https and 80 for http
	// ("https://a" is "https://a:443"), and http never matching an
	// https origin. Subdomains do not match. When the caller sets
	// Request.Host apart from the URL, it must name the same host and
	// port too (a shared front end routes by it).
	Origins []string
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// WaitForNewKey, when positive, is how long a request that got
	// expired_api_key waits for a new key when the key file still holds
	// the refused one (bounded by the request's context). It suits an
	// emergency rotation (overlap 0s), where the old key is refused before
	// the kubelet has updated the mounted Secret: requests are held until
	// the new key arrives instead of failing. Every request refused with
	// the same key joins one wait, which reads nothing until the file
	// changes (the watcher reports it; without one, the wait looks at the
	// file's stamp every 200ms) and then reads it once for all of them.
	// When that wait ends with no new key, the requests refused with the
	// same key afterwards return the 401 at once, until the key changes:
	// a key expired for good holds one round of requests, not each one.
	// invalid_api_key (a disabled or deleted key: no new key is coming)
	// never waits. Zero: no waiting.
	WaitForNewKey time.Duration

	bindOnce sync.Once
	bind     binding
}

func (t *Transport) binding() *binding {
	t.bindOnce.Do(func() { t.bind = newBinding(t.Origins) })
	return &t.bind
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.binding()
	if b.err != nil {
		closeBody(req)
		return nil, b.err
	}
	if !b.allows(req) {
		return t.base().RoundTrip(req) // not ours: as the caller made it
	}
	key, err := t.Source.Key()
	if err != nil {
		closeBody(req)
		return nil, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	resp, err := t.base().RoundTrip(withKey(req, req.Body, key))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	code := errorCode(resp)
	if code != "expired_api_key" && code != "invalid_api_key" {
		return resp, nil
	}
	if !replayable {
		// No retry, but the next request should not meet the same answer.
		if cur, _ := t.Source.Key(); cur == key {
			t.Source.refresh()
		}
		return resp, nil
	}
	fresh := t.freshKey(req.Context(), key, code == "expired_api_key")
	if fresh == "" {
		return resp, nil
	}
	body := req.Body // nil or http.NoBody: nothing to replay
	if req.Body != nil && req.Body != http.NoBody {
		if body, err = req.GetBody(); err != nil {
			return resp, nil //nolint:nilerr // no replay possible: the first answer stands
		}
	}
	drain(resp)
	return t.base().RoundTrip(withKey(req, body, fresh))
}

// freshKey returns the key to retry with, or "" when there is none: the
// Source's key when it is no longer the refused one, else after a look at
// the file (a read only if it changed since it was read), else, for an
// expired key (a rotation the volume has not caught up with), after the
// shared wait of up to WaitForNewKey. A disabled or deleted key
// (invalid_api_key) has no successor coming, so nothing waits for one.
func (t *Transport) freshKey(ctx context.Context, refused string, expired bool) string {
	cur, _ := t.Source.Key()
	if cur == refused {
		t.Source.refresh()
		cur, _ = t.Source.Key()
	}
	if cur != refused {
		return cur
	}
	if !expired || t.WaitForNewKey <= 0 || !t.Source.waitChange(ctx, refused, t.WaitForNewKey) {
		return ""
	}
	cur, _ = t.Source.Key()
	return cur
}

// closeBody closes the body of a request that is not sent: a RoundTripper
// always closes it.
func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// withKey clones req with body and the Authorization header for key.
func withKey(req *http.Request, body io.ReadCloser, key string) *http.Request {
	r := req.Clone(req.Context())
	r.Body = body
	r.Header.Set("Authorization", "Bearer "+key)
	return r
}

// errorCode reads the code of a meterr error answer, leaving the body
// readable from the start for the caller.
func errorCode(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil {
		return ""
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(head, &e) != nil {
		return ""
	}
	return e.Error.Code
}

// drain reads a little of an answer that is being replaced, so its
// connection can be reused, and closes it.
func drain(resp *http.Response) {
	if resp.Body != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		_ = resp.Body.Close()
	}
}
