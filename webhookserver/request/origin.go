package request

import (
	"strings"

	"github.com/meterr/meterr-operator/internal/ascii"
)

// hostOfURL returns the host of an absolute http(s) URL, or "".
func hostOfURL(u string) string {
	i := strings.Index(u, "://")
	if i <= 0 {
		return ""
	}
	scheme := u[:i]
	if !ascii.EqualFold(scheme, "https") && !ascii.EqualFold(scheme, "http") {
		return ""
	}
	rest := u[i+3:]
	if j := strings.IndexAny(rest, "/?#\\"); j >= 0 {
		rest = rest[:j]
	}
	if j := strings.LastIndexByte(rest, '@'); j >= 0 {
		rest = rest[j+1:]
	}
	if strings.HasPrefix(rest, "[") {
		// An IPv6 literal is never one of a key's domains.
		return ""
	}
	if j := strings.IndexByte(rest, ':'); j >= 0 {
		rest = rest[:j]
	}
	rest = strings.TrimSuffix(rest, ".")
	// Empty labels ("..", a leading dot) make no host name.
	if strings.HasPrefix(rest, ".") || strings.HasSuffix(rest, ".") || strings.Contains(rest, "..") {
		return ""
	}
	for k := 0; k < len(rest); k++ {
		c := rest[k]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return ""
		}
	}
	return rest
}

// OriginHost returns the host a browser request says it comes from: the host
// of Origin or, without an Origin header, of Referer; without port or
// trailing dot, not lower-cased (matching folds ASCII case). An Origin that is
// present but opaque ("null"), not a URL, or repeated is the answer: it does
// not fall back to Referer, so a sandboxed page cannot borrow its embedder's
// domain. "" means none.
//
// Domain restrictions only bind browsers, which set these headers themselves;
// any other client can send what it likes. They keep a key that leaked in a
// web page from being used by other web sites.
func (h Headers) OriginHost() string {
	if v, n, ok := h.value("Origin", "origin"); ok {
		if n != 1 {
			return ""
		}
		return hostOfURL(v)
	}
	if v, n, ok := h.value("Referer", "referer"); ok && n == 1 {
		return hostOfURL(v)
	}
	return ""
}
