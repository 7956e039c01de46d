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
		o, err := redis.ParseURL(s)
		if err != nil {
			// go-redis's errors may quote the URL, password included.
			return nil, errors.New("is not a valid " + scheme + ":// URL: " + scheme + "://[[user]:password@]host:port[/db]")
		}
		return &redis.UniversalOptions{
			Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, DB: o.DB,
			TLSConfig: o.TLSConfig, ClientName: o.ClientName, Protocol: o.Protocol, PoolSize: o.PoolSize,
		}, nil
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
		default:
			// The name only: a mistyped parameter could hold a password.
			return nil, bad("does not take the query parameter %q", k)
		}
	}
	if strings.HasPrefix(scheme, "rediss") {
		// No ServerName: crypto/tls takes each node's own host name.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	o.IsClusterMode = !sentinel
	return o, nil
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
