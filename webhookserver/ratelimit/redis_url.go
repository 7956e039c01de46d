package ratelimit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The forms of --redis-url:
//
//	redis://[[user]:password@]host[:6379][/db]            one Redis
//	rediss://...                                           the same over TLS
//	redis-sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/master[?db=N]
//	rediss-sentinel://...                                  the same over TLS
//	redis-cluster://[[user]:password@]host1[:6379][,host2[:6379]...]
//	rediss-cluster://...                                   the same over TLS
//
// In the Sentinel form the credentials are the Redis servers' (master and
// replicas); sentinels that require a password of their own take
// ?sentinel_password= (and ?sentinel_username=). A Redis Cluster has only
// database 0, so its form takes no path.
//
// Every form also takes go-redis's own query options (timeouts, pool, TLS:
// dial_timeout=2s, pool_size=32, skip_verify=true, ...): go-redis's URL
// parsers read them (ParseURL, ParseFailoverURL, ParseClusterURL), from a URL
// that holds the options alone, never the credentials, so that their errors
// cannot repeat a password. The addresses, credentials, master name and
// database are this file's (go-redis's Sentinel and Cluster URLs take one
// host and addr= parameters, and a Sentinel URL's user part is the
// sentinels'). The options the auth server sets for its own reasons
// (retries) and those that would bypass the form (addr, master_name,
// username, password) are refused.
const (
	redisSchemes     = "redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://"
	sentinelSyntax   = "redis-sentinel://[[user]:password@]host1:26379,host2:26379/mastername[?db=0]"
	clusterSyntax    = "redis-cluster://[[user]:password@]host1:6379,host2:6379,host3:6379"
	defaultSentinelP = "26379"
	defaultRedisPort = "6379"
)

// ValidateRedisURL checks a --redis-url (see parseRedisURL) without
// connecting. Its error never repeats the URL or any part of it that could
// be a password.
func ValidateRedisURL(s string) error {
	_, err := parseRedisURL(s)
	return err
}

// parseRedisURL turns --redis-url into go-redis options: one Redis, a
// Sentinel-managed master, or a Cluster. Its errors never repeat the URL or
// any part of it that could be a password.
func parseRedisURL(s string) (*redis.UniversalOptions, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return nil, errors.New("must start with " + redisSchemes)
	}
	switch scheme {
	case "redis", "rediss":
		return parseSingle(scheme, s)
	case "redis-sentinel", "rediss-sentinel":
		return parseMultiHost(scheme, rest, true)
	case "redis-cluster", "rediss-cluster":
		return parseMultiHost(scheme, rest, false)
	}
	return nil, errors.New("must start with " + redisSchemes)
}

// parseMultiHost parses what follows "://" in the Sentinel and Cluster forms.
func parseMultiHost(scheme, rest string, sentinel bool) (*redis.UniversalOptions, error) {
	syntax, defaultPort := clusterSyntax, defaultRedisPort
	if sentinel {
		syntax, defaultPort = sentinelSyntax, defaultSentinelP
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf(scheme+":// "+format+"; the form is "+syntax, args...)
	}
	if strings.Contains(rest, "#") {
		return nil, bad("takes no #fragment (a # in a password must be written %%23)")
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	o := &redis.UniversalOptions{}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		user, pass, _ := strings.Cut(authority[:i], ":")
		var err1, err2 error
		o.Username, err1 = url.PathUnescape(user)
		o.Password, err2 = url.PathUnescape(pass)
		if err1 != nil || err2 != nil {
			return nil, bad("has a badly percent-encoded user or password")
		}
		authority = authority[i+1:]
	}
	hosts := strings.Split(authority, ",")
	if authority == "" {
		return nil, bad("needs at least one host:port")
	}
	for i, h := range hosts {
		addr, err := normalizeHostPort(h, defaultPort)
		if err != nil {
			return nil, bad("address %d of %d %v", i+1, len(hosts), err)
		}
		o.Addrs = append(o.Addrs, addr)
	}
	if sentinel {
		name, extra, _ := strings.Cut(path, "/")
		if name == "" {
			return nil, bad("needs the master's name after the addresses")
		}
		if extra != "" {
			return nil, bad("takes one path segment, the master's name (the database goes in ?db=)")
		}
		var err error
		if o.MasterName, err = url.PathUnescape(name); err != nil {
			return nil, bad("has a badly percent-encoded master name")
		}
	} else if path != "" {
		return nil, bad("takes no path: a Redis Cluster has only database 0")
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, bad("has a malformed query string")
	}
	// This form's own parameters; the rest are go-redis's options.
	skipVerify := false
	for k, v := range q {
		switch {
		case sentinel && k == "db":
			db, err := strconv.Atoi(v[len(v)-1])
			if err != nil || db < 0 {
				return nil, bad("?db= must be a database number, 0 or more")
			}
			o.DB = db
		case sentinel && k == "sentinel_password":
			o.SentinelPassword = v[len(v)-1]
		case sentinel && k == "sentinel_username":
			o.SentinelUsername = v[len(v)-1]
		case k == "skip_verify" && strings.HasPrefix(scheme, "rediss"):
			// Here for both forms: go-redis's Cluster URL lacks it.
			b, err := strconv.ParseBool(v[len(v)-1])
			if err != nil {
				return nil, bad("?skip_verify= must be true or false")
			}
			skipVerify = b
		default:
			continue
		}
		delete(q, k)
	}
	tlsOn := strings.HasPrefix(scheme, "rediss")
	t, err := goRedisOptions(tlsOn, q, sentinel)
	if err != nil {
		return nil, bad("%v", err)
	}
	if t.TLSConfig != nil {
		t.TLSConfig.InsecureSkipVerify = skipVerify
	}
	t.Addrs, t.Username, t.Password, t.MasterName, t.DB = o.Addrs, o.Username, o.Password, o.MasterName, o.DB
	t.SentinelUsername, t.SentinelPassword = o.SentinelUsername, o.SentinelPassword
	t.IsClusterMode = !sentinel
	return t, nil
}

// parseSingle parses redis:// and rediss://, go-redis's own URL, with
// go-redis's ParseURL. Its error is ParseURL's on the URL without its user
// part, so that it cannot repeat a password.
func parseSingle(scheme, s string) (*redis.UniversalOptions, error) {
	syntax := scheme + "://[[user]:password@]host:port[/db][?option=value&...]"
	bad := func(why string) error {
		if why != "" {
			why = " (" + why + ")"
		}
		return errors.New("is not a valid " + scheme + ":// URL" + why + ": " + syntax)
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's errors quote the URL, password included.
		return nil, bad("")
	}
	creds := u.User
	u.User = nil
	q := u.Query()
	if err := refuseOptions(q); err != nil {
		return nil, bad(err.Error())
	}
	o, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, bad(goRedisError(err))
	}
	if creds != nil {
		o.Username = creds.Username()
		o.Password, _ = creds.Password()
	}
	return &redis.UniversalOptions{
		Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig,
		ClientName: o.ClientName, Protocol: o.Protocol,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout, PoolTimeout: o.PoolTimeout,
		PoolFIFO: o.PoolFIFO, PoolSize: o.PoolSize, MinIdleConns: o.MinIdleConns, MaxIdleConns: o.MaxIdleConns,
		MaxActiveConns: o.MaxActiveConns, ConnMaxIdleTime: o.ConnMaxIdleTime, ConnMaxLifetime: o.ConnMaxLifetime,
	}, nil
}

// refusedOptions are go-redis query options the auth server does not take:
// those it sets itself (one attempt per command, so that a request follows
// --redis-failure-mode at once), reads from replicas (a count read there may
// be behind; and with Sentinel they would make go-redis a cluster client,
// whose health check asks for a cluster), and those that would bypass the
// URL form.
var refusedOptions = map[string]string{
	"max_retries":          "the auth server makes one attempt per command",
	"min_retry_backoff":    "the auth server makes one attempt per command",
	"max_retry_backoff":    "the auth server makes one attempt per command",
	"dialer_retries":       "the auth server dials once per attempt",
	"dialer_retry_timeout": "the auth server dials once per attempt",
	"route_by_latency":     "the counts are read and written on the masters",
	"route_randomly":       "the counts are read and written on the masters",
	"read_only":            "the counts are read and written on the masters",
	"addr":                 "the addresses go before the path, separated by commas",
	"master_name":          "the master's name is the path",
	"username":             "the user goes before the @",
	"password":             "the password goes before the @",
}

func refuseOptions(q url.Values) error {
	for k := range q {
		if why, ok := refusedOptions[k]; ok {
			return fmt.Errorf("does not take the query parameter %q: %s", k, why)
		}
	}
	return nil
}

// goRedisOptions reads go-redis's query options q (already stripped of the
// form's own) with go-redis's Sentinel or Cluster parser, from a URL that
// holds nothing else.
func goRedisOptions(tlsOn bool, q url.Values, sentinel bool) (*redis.UniversalOptions, error) {
	if err := refuseOptions(q); err != nil {
		return nil, err
	}
	scheme := "redis"
	if tlsOn {
		scheme = "rediss"
	}
	u := (&url.URL{Scheme: scheme, Host: "localhost", RawQuery: q.Encode()}).String()
	o := &redis.UniversalOptions{}
	if sentinel {
		f, err := redis.ParseFailoverURL(u)
		if err != nil {
			return nil, errors.New(goRedisError(err))
		}
		o.ClientName, o.Protocol = f.ClientName, f.Protocol
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = f.DialTimeout, f.ReadTimeout, f.WriteTimeout, f.PoolTimeout
		o.PoolFIFO, o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns = f.PoolFIFO, f.PoolSize, f.MinIdleConns, f.MaxIdleConns, f.MaxActiveConns
		o.ConnMaxIdleTime, o.ConnMaxLifetime = f.ConnMaxIdleTime, f.ConnMaxLifetime
	} else {
		c, err := redis.ParseClusterURL(u)
		if err != nil {
			return nil, errors.New(goRedisError(err))
		}
		o.ClientName, o.Protocol = c.ClientName, c.Protocol
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = c.DialTimeout, c.ReadTimeout, c.WriteTimeout, c.PoolTimeout
		o.PoolFIFO, o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns = c.PoolFIFO, c.PoolSize, c.MinIdleConns, c.MaxIdleConns, c.MaxActiveConns
		o.ConnMaxIdleTime, o.ConnMaxLifetime = c.ConnMaxIdleTime, c.ConnMaxLifetime
		o.MaxRedirects = c.MaxRedirects
	}
	if tlsOn {
		// No ServerName: crypto/tls takes each node's own host name.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// goRedisError turns an error of go-redis's URL parsers (on a URL without
// credentials) into this file's words: an unknown option is named as the
// other refusals name it.
func goRedisError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	if names, ok := strings.CutPrefix(msg, "unexpected option: "); ok {
		first, _, _ := strings.Cut(names, ", ")
		return fmt.Sprintf("does not take the query parameter %q", first)
	}
	return msg
}

// normalizeHostPort checks one address of a multi-host URL; it may say which
// part is wrong but never repeats it.
func normalizeHostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", errors.New("is empty")
	}
	host, port := h, defaultPort
	if strings.HasPrefix(h, "[") || strings.Count(h, ":") == 1 {
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			if !strings.HasPrefix(h, "[") || !strings.HasSuffix(h, "]") {
				return "", errors.New("is not host:port")
			}
			host, port = strings.Trim(h, "[]"), defaultPort
		}
	} else if strings.Contains(h, ":") {
		return "", errors.New("is an IPv6 address without [brackets]")
	}
	if host == "" {
		return "", errors.New("has no host")
	}
	if strings.ContainsAny(host, " \t@/?#[]") {
		return "", errors.New("has a malformed host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", errors.New("has no valid port (1 to 65535)")
	}
	return net.JoinHostPort(host, port), nil
}
