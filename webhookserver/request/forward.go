package request

import (
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// The endpoints of the auth API.
const (
	VerifyPath = "/v1/auth/verify"
	CheckPath  = "/v1/auth/check"
)

// ForEachOriginal calls fn with every method and path that a forward-auth
// request r says the client's original request has. found is false when r
// describes no original request; ok is false when a description is malformed.
//
// The sources, by proxy:
//   - Envoy ext_authz (and Envoy Gateway, Istio, Gateway API ExternalAuth):
//     the original path appended to /v1/auth/check, the client's own method;
//   - Traefik, Caddy: X-Forwarded-Method and X-Forwarded-Uri;
//   - ingress-nginx: X-Original-Method and X-Original-URL (absolute);
//   - NGINX auth_request: X-Original-URI, with X-Original-Method if set, else
//     the request's method.
//
// A HEAD request is also reported as GET with the same paths: upstreams
// answer HEAD as GET, so it needs what a GET there needs, and what HEAD rules
// add.
//
// Every source present is reported, not only the first: proxies pass most
// client headers on to the auth server, so a client could add, say, an
// X-Forwarded-Uri of its own next to the one its proxy sets. Requiring what
// every description requires means such a header can only make the client's
// own request need more. For the same reason every path is reported in
// several spellings (as sent, with dot segments and doubled slashes resolved,
// percent-decoded, without ;parameters): rules must match however the
// upstream application reads the path.
func ForEachOriginal(r *http.Request, fn func(method, path string)) (found, ok bool) {
	ok = true
	source := func(method, raw string) {
		p, valid := OriginalPath(raw)
		if !valid {
			found, ok = true, false
			return
		}
		found = true
		ForOriginal(method, p, fn)
	}

	if suffix, isEnvoy := strings.CutPrefix(r.URL.Path, CheckPath); isEnvoy && suffix != "" {
		// Envoy: the original path (decoded by our URL parser) and, when
		// the encoding differed, the raw form as sent.
		found = true
		ForOriginal(r.Method, suffix, fn)
		if raw, isRaw := strings.CutPrefix(r.URL.RawPath, CheckPath); isRaw && strings.HasPrefix(raw, "/") {
			ForOriginal(r.Method, raw, fn)
		}
	}
	h := r.Header
	if v, present := h["X-Forwarded-Uri"]; present {
		if len(v) != 1 || len(h["X-Forwarded-Method"]) > 1 {
			return true, false
		}
		source(methodOr(h["X-Forwarded-Method"], r.Method), v[0])
	}
	if v, present := h["X-Original-Url"]; present {
		if len(v) != 1 || len(h["X-Original-Method"]) > 1 {
			return true, false
		}
		source(methodOr(h["X-Original-Method"], r.Method), v[0])
	}
	if v, present := h["X-Original-Uri"]; present {
		if len(v) != 1 || len(h["X-Original-Method"]) > 1 {
			return true, false
		}
		source(methodOr(h["X-Original-Method"], r.Method), v[0])
	}
	return found, ok
}

// ForOriginal calls fn with every reading of one original request: each
// spelling of path (pathSpellings), with the method as sent and upper-cased,
// and a HEAD request also as GET. An upstream serves HEAD as it serves GET (net/http,
// and most servers, run the GET handler and drop the body), so GET's rules
// govern a HEAD request too. Every front-end reads an original request this
// way (ForEachOriginal, extauthz's Check, Explain).
func ForOriginal(method, path string, fn func(method, path string)) {
	upper := strings.ToUpper(method)
	head := upper == http.MethodHead
	pathSpellings(path, func(p string) {
		fn(method, p)
		if upper != method {
			fn(upper, p)
		}
		if head {
			fn(http.MethodGet, p)
		}
	})
}

// OriginalForLog returns the method and path of the original request a
// forward-auth request describes: the first description found, in the order
// ForEachOriginal reads them, without query or fragment. "" when there is
// none.
func OriginalForLog(r *http.Request) (method, path string) {
	if suffix, ok := strings.CutPrefix(r.URL.Path, CheckPath); ok && suffix != "" {
		return r.Method, suffix
	}
	h := r.Header
	for _, src := range [...]struct{ uri, method string }{
		{"X-Forwarded-Uri", "X-Forwarded-Method"},
		{"X-Original-Url", "X-Original-Method"},
		{"X-Original-Uri", "X-Original-Method"},
	} {
		if v := h[src.uri]; len(v) > 0 {
			p, ok := OriginalPath(v[0])
			if !ok {
				p = "(malformed)"
			}
			return methodOr(h[src.method], r.Method), p
		}
	}
	return r.Method, ""
}

func methodOr(v []string, def string) string {
	if len(v) == 1 && v[0] != "" {
		return v[0]
	}
	return def
}

// OriginalPath returns the path of an original request target: origin form
// ("/p?q") or absolute form ("https://host/p?q"), without query or fragment.
func OriginalPath(target string) (string, bool) {
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	if !strings.HasPrefix(target, "/") {
		i := strings.Index(target, "://")
		if i <= 0 || !isScheme(target[:i]) {
			return "", false
		}
		rest := target[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return "/", true
		}
		target = rest[j:]
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c < ' ' || c == 0x7f {
			return "", false
		}
	}
	return target, true
}

func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// pathSpellings calls f with p and with the other forms an upstream server
// may read it as. Only unusual paths have more than one.
func pathSpellings(p string, f func(string)) {
	f(p)
	if !strings.ContainsAny(p, "%;\\") && !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return
	}
	forms := [4]string{cleanPath(p)}
	if strings.IndexByte(p, '\\') >= 0 {
		forms[1] = cleanPath(strings.ReplaceAll(p, "\\", "/"))
	}
	if strings.IndexByte(p, '%') >= 0 {
		if d, err := url.PathUnescape(p); err == nil {
			forms[2] = cleanPath(strings.ReplaceAll(d, "\\", "/"))
		}
	}
	if strings.IndexByte(p, ';') >= 0 {
		forms[3] = stripParams(forms[0])
	}
	for i, s := range forms {
		if s != "" && s != p && (i == 0 || s != forms[0]) {
			f(s)
		}
	}
}

// cleanPath resolves dot segments and doubled slashes, keeping a trailing
// slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// stripParams drops ";params" from every segment, as Java servlet containers
// do ("/a;x=1/b" is "/a/b" there).
func stripParams(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

// QueryPermission reads ?permission= from a raw query: repeatable and
// comma-separated, every named permission required. present is false without
// the parameter; ok is false when a value is empty or unknown.
func QueryPermission(rawQuery string) (need authz.Permission, present, ok bool) {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != "permission" {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != "permission" {
				continue
			}
		}
		present = true
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				return 0, true, false
			}
			v = uv
		}
		for name := range strings.SplitSeq(v, ",") {
			p, known := authz.ParsePermission(strings.TrimSpace(name))
			if !known {
				return 0, true, false
			}
			need |= p
		}
	}
	return need, present, true
}
