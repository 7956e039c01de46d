package meterrkey

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/meterr/meterr-operator/internal/ascii"
)

var (
	// ErrUnbound: the Transport has no Origins, so there is nowhere it may
	// send the key; it sends nothing.
	ErrUnbound = errors.New("meterrkey: Transport.Origins is empty: name the origins the key may be sent to")
	// ErrOrigin: an entry of Transport.Origins is not "scheme://host" or
	// "scheme://host:port" with the scheme http or https.
	ErrOrigin = errors.New("meterrkey: Transport.Origins: not an origin")
)

// origin is one scheme, host and port the key may be sent to.
type origin struct {
	scheme, host, port string // port: always explicit, in decimal
}

// parseOrigin accepts "scheme://host[:port]" and an optional trailing "/".
// A path, query, fragment or user info would suggest a narrower or wider
// binding than the one enforced (scheme, host and port), so they are refused.
func parseOrigin(s string) (origin, error) {
	u, err := url.Parse(s)
	if err != nil {
		return origin{}, fmt.Errorf("%w: %q: %w", ErrOrigin, s, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Opaque != "" || u.User != nil ||
		u.Hostname() == "" || u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return origin{}, fmt.Errorf("%w: %q is not scheme://host[:port] with the scheme http or https", ErrOrigin, s)
	}
	port, ok := portOf(u.Scheme, u.Port())
	if !ok {
		return origin{}, fmt.Errorf("%w: %q: bad port", ErrOrigin, s)
	}
	return origin{scheme: u.Scheme, host: u.Hostname(), port: port}, nil
}

// portOf is the port a connection for scheme goes to: the default port when
// none is named, and "0443" is 443.
func portOf(scheme, port string) (string, bool) {
	if port == "" {
		switch {
		case ascii.EqualFold(scheme, "https"):
			return "443", true
		case ascii.EqualFold(scheme, "http"):
			return "80", true
		}
		return "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", false
	}
	return strconv.FormatUint(n, 10), true
}

// matches reports whether req goes to o: the URL's scheme, host (ASCII case
// folded) and port, and the Host header when the caller set one apart from
// the URL (a shared front end routes by it, so it must name o too).
func (o origin) matches(req *http.Request) bool {
	u := req.URL
	if u == nil || !ascii.EqualFold(u.Scheme, o.scheme) || !o.hostPort(u.Scheme, u.Host) {
		return false
	}
	return req.Host == "" || o.hostPort(u.Scheme, req.Host)
}

// hostPort reports whether hostport ("host", "host:port", "[v6]:port") is
// o's host and port when reached with scheme.
func (o origin) hostPort(scheme, hostport string) bool {
	h := url.URL{Host: hostport}
	port, ok := portOf(scheme, h.Port())
	return ok && port == o.port && ascii.EqualFold(h.Hostname(), o.host)
}

// binding is a Transport's parsed Origins.
type binding struct {
	origins []origin
	err     error
}

func newBinding(list []string) binding {
	if len(list) == 0 {
		return binding{err: ErrUnbound}
	}
	b := binding{origins: make([]origin, 0, len(list))}
	for _, s := range list {
		o, err := parseOrigin(s)
		if err != nil {
			return binding{err: err}
		}
		b.origins = append(b.origins, o)
	}
	return b
}

// allows reports whether req may carry the key.
func (b *binding) allows(req *http.Request) bool {
	for _, o := range b.origins {
		if o.matches(req) {
			return true
		}
	}
	return false
}
