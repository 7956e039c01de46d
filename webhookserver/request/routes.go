package request

import (
	"fmt"
	"sort"
	"strings"

	"github.com/meterr/meterr-operator/webhookserver/authz"
)

// Route requires a permission for requests whose method and path match: the
// rule "POST /v1/usage=write" is Route{Method: "POST", Prefix: "/v1/usage",
// Permission: "write"}. Method "*" matches every method. Prefix is a plain
// string prefix, compared case-sensitively: "/v1/billing" also matches
// "/v1/billing-export" but not "/v1/Billing"; write "/v1/billing/" for the
// subtree only. A GET rule governs HEAD too (see ForEachOriginal).
type Route struct {
	Method     string
	Prefix     string
	Permission string
}

// String returns the rule in --route syntax.
func (r Route) String() string { return r.Method + " " + r.Prefix + "=" + r.Permission }

// ParseRoute reads a --route value: "METHOD /path/prefix=permission".
func ParseRoute(s string) (Route, error) {
	method, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Route{}, fmt.Errorf("route %q: want METHOD /path/prefix=permission", s)
	}
	rest = strings.TrimSpace(rest)
	eq := strings.LastIndexByte(rest, '=')
	if eq < 0 {
		return Route{}, fmt.Errorf("route %q: want METHOD /path/prefix=permission", s)
	}
	r := Route{Method: strings.ToUpper(method), Prefix: rest[:eq], Permission: rest[eq+1:]}
	if r.Method != "*" && !isHTTPToken(r.Method) {
		return Route{}, fmt.Errorf("route %q: %q is not an HTTP method or *", s, method)
	}
	if !strings.HasPrefix(r.Prefix, "/") || strings.ContainsAny(r.Prefix, " \t?#") {
		return Route{}, fmt.Errorf("route %q: path prefix %q must start with / and hold no space, ? or #", s, r.Prefix)
	}
	if _, ok := authz.ParsePermission(r.Permission); !ok {
		return Route{}, fmt.Errorf("route %q: unknown permission %q; want read, write or admin", s, r.Permission)
	}
	return r, nil
}

func isHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

type compiledRoute struct {
	method string // "" for *
	prefix string
	perm   authz.Permission
}

// Routes are compiled Route rules (CompileRoutes); routeTable is sorted so that the first match is the best: longest prefix
// first, and at equal length a method-specific rule before "*".
type Routes []compiledRoute

// CompileRoutes checks and compiles route rules.
func CompileRoutes(routes []Route) (Routes, error) {
	t := make(Routes, 0, len(routes))
	seen := map[string]bool{}
	for _, r := range routes {
		// Accept rules built in code as well as parsed ones.
		r2, err := ParseRoute(r.String())
		if err != nil {
			return nil, err
		}
		key := r2.Method + " " + r2.Prefix
		if seen[key] {
			return nil, fmt.Errorf("route %q: a rule for %s %s is already given", r, r2.Method, r2.Prefix)
		}
		seen[key] = true
		perm, _ := authz.ParsePermission(r2.Permission)
		m := r2.Method
		if m == "*" {
			m = ""
		}
		t = append(t, compiledRoute{method: m, prefix: r2.Prefix, perm: perm})
	}
	sort.SliceStable(t, func(i, j int) bool {
		if len(t[i].prefix) != len(t[j].prefix) {
			return len(t[i].prefix) > len(t[j].prefix)
		}
		return t[i].method != "" && t[j].method == ""
	})
	return t, nil
}

// Match returns the permission the best rule for method and path requires, or
// 0 when no rule matches. Methods compare exactly; callers try the upper-case
// form too.
func (t Routes) Match(method, path string) authz.Permission {
	for _, r := range t {
		if (r.method == "" || r.method == method) && strings.HasPrefix(path, r.prefix) {
			return r.perm
		}
	}
	return 0
}
