package request

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// SourceKind is where a request may carry its key.
type SourceKind uint8

// The kinds of credential source (--credential-sources).
const (
	// SourceAuthorization is "Authorization: Bearer <key>", the default.
	SourceAuthorization SourceKind = iota
	// SourceHeader is a named header holding the key itself ("X-API-Key:
	// <key>").
	SourceHeader
	// SourceQuery is a query parameter of the original request holding the
	// key. Only the gRPC front-end reads it: only Envoy can remove it from
	// the path before the upstream (query_parameters_to_remove); a
	// forward-auth proxy would pass the key on in the URL.
	SourceQuery
)

// Source is one place a request may carry its key.
type Source struct {
	Kind SourceKind
	// Name is the header's canonical name, or the query parameter's.
	Name string
	// lower is the header's lower-case name (Envoy's map); remove, the
	// list an allowed forward-auth answer asks the proxy to remove.
	lower  string
	remove []string
}

// Sources are the places a request may carry its key, from
// --credential-sources. A request must use exactly one of them: a key in
// two (or two Authorization headers) is refused as ambiguous, so a proxy
// and its upstream can never read different keys.
type Sources []Source

// DefaultSources is the Authorization header alone.
var DefaultSources = Sources{authorizationSource}

var authorizationSource = Source{Kind: SourceAuthorization, Name: "Authorization", lower: "authorization", remove: []string{"authorization"}}

// ParseSources parses --credential-sources: a comma-separated list of
// "authorization", "header:<Name>" and "query:<name>". The empty string is
// DefaultSources.
func ParseSources(s string) (Sources, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultSources, nil
	}
	var out Sources
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		kind, name, hasName := strings.Cut(item, ":")
		var src Source
		switch strings.ToLower(kind) {
		case "authorization":
			if hasName {
				return nil, fmt.Errorf("credential source %q: authorization takes no name", item)
			}
			src = authorizationSource
		case "header":
			if !validToken(name) {
				return nil, fmt.Errorf("credential source %q: a header source is header:<Name>, e.g. header:X-API-Key", item)
			}
			canon := http.CanonicalHeaderKey(name)
			switch canon {
			case "Authorization":
				return nil, fmt.Errorf("credential source %q: use authorization (Bearer) for the Authorization header", item)
			case "Cookie", "Host", "X-Forwarded-For", "Forwarded", "X-Real-Ip", "Origin", "Referer":
				return nil, fmt.Errorf("credential source %q: %s carries other facts of the request and cannot hold a key", item, canon)
			}
			if strings.HasPrefix(canon, "X-Meterr-") || strings.HasPrefix(canon, "X-Envoy-") || strings.HasPrefix(canon, "X-Forwarded-") {
				return nil, fmt.Errorf("credential source %q: %s is a header the auth server or a proxy sets", item, canon)
			}
			lower := strings.ToLower(canon)
			src = Source{Kind: SourceHeader, Name: canon, lower: lower, remove: []string{lower}}
		case "query":
			if !validToken(name) {
				return nil, fmt.Errorf("credential source %q: a query source is query:<name>, e.g. query:api_key", item)
			}
			src = Source{Kind: SourceQuery, Name: name}
		default:
			return nil, fmt.Errorf("credential source %q: want authorization, header:<Name> or query:<name>", item)
		}
		id := fmt.Sprint(src.Kind, ":", strings.ToLower(src.Name))
		if seen[id] {
			return nil, fmt.Errorf("credential source %q is listed twice", item)
		}
		seen[id] = true
		out = append(out, src)
	}
	return out, nil
}

// validToken says whether s is a non-empty HTTP token (a header name, and
// a query parameter name we accept).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// WithHeaders returns ss with a header source for each of names (the
// --key-headers contract: header names besides Authorization that may
// carry the key), those already listed kept once.
func (ss Sources) WithHeaders(names []string) (Sources, error) {
	if len(names) == 0 {
		return ss, nil
	}
	out := append(Sources(nil), ss...)
	for _, n := range names {
		add, err := ParseSources("header:" + strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(out, func(s Source) bool { return s.Kind == SourceHeader && s.Name == add[0].Name }) {
			out = append(out, add[0])
		}
	}
	return out, nil
}

// String is the flag's form of s.
func (ss Sources) String() string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		switch s.Kind {
		case SourceAuthorization:
			parts[i] = "authorization"
		case SourceHeader:
			parts[i] = "header:" + s.Name
		case SourceQuery:
			parts[i] = "query:" + s.Name
		}
	}
	return strings.Join(parts, ",")
}

// HasQuery says whether a query parameter is among ss.
func (ss Sources) HasQuery() bool {
	for _, s := range ss {
		if s.Kind == SourceQuery {
			return true
		}
	}
	return false
}

// Credential returns the value of the request's only Authorization header
// ("Bearer <token>", which authz.BearerToken reads), "" when there is none
// or several: several are refused as ambiguous.
func Credential(h http.Header) string {
	if v := h["Authorization"]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// FromHTTP returns the credential of a net/http request and the source it
// came from: the value of the one source present, or ("", nil) when none
// is, or more than one (refused as invalid_api_key). Query sources are not
// read here (see SourceQuery).
func (ss Sources) FromHTTP(h http.Header) (string, *Source) {
	if len(ss) == 1 && ss[0].Kind == SourceAuthorization {
		// The default, on every request: one map lookup.
		return Credential(h), nil
	}
	var v string
	var from *Source
	for i := range ss {
		s := &ss[i]
		if s.Kind == SourceQuery {
			continue
		}
		vs, ok := h[s.Name]
		if !ok {
			continue
		}
		if len(vs) != 1 || from != nil {
			return "", nil
		}
		v, from = vs[0], s
	}
	return v, from
}

// FromEnvoy returns the credential of an ext_authz request, from its
// lower-case headers and the original path (for query sources), as
// FromHTTP does.
func (ss Sources) FromEnvoy(h map[string]string, path string) (string, *Source) {
	if len(ss) == 1 && ss[0].Kind == SourceAuthorization {
		return h["authorization"], nil
	}
	var v string
	var from *Source
	var query url.Values
	for i := range ss {
		s := &ss[i]
		var got string
		switch s.Kind {
		case SourceQuery:
			if query == nil {
				_, raw, _ := strings.Cut(path, "?")
				raw, _, _ = strings.Cut(raw, "#")
				var err error
				if query, err = url.ParseQuery(raw); err != nil {
					// A query we cannot read may hide a key: refuse.
					return "", nil
				}
			}
			vs, ok := query[s.Name]
			if !ok {
				continue
			}
			if len(vs) != 1 {
				return "", nil
			}
			got = vs[0]
		default:
			hv, ok := h[s.lower]
			if !ok {
				continue
			}
			got = hv
		}
		if from != nil {
			return "", nil
		}
		v, from = got, s
	}
	return v, from
}

// Token returns the key a credential carries: the token of "Bearer <key>"
// from the Authorization header (from nil or SourceAuthorization), the
// value itself from a named header or query parameter; false when it holds
// none. Only the shape of a token is checked here.
func Token(credential string, from *Source) (string, bool) {
	if from == nil || from.Kind == SourceAuthorization {
		return authz.BearerToken(credential)
	}
	return authz.RawToken(credential)
}

// Remove returns the request headers a proxy must remove before the
// upstream when the key came from s (nil: Authorization).
func (s *Source) Remove() []string {
	if s == nil {
		return authorizationSource.remove
	}
	return s.remove
}

// RemoveQuery returns the query parameters a proxy must remove before the
// upstream when the key came from s.
func (s *Source) RemoveQuery() []string {
	if s == nil || s.Kind != SourceQuery {
		return nil
	}
	return []string{s.Name}
}
