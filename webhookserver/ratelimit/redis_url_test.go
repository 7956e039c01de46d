package ratelimit

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestParseRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url      string
		addrs    []string
		master   string
		db       int
		user     string
		password string
		tls      bool
		cluster  bool
	}{
		{url: "redis://redis:6379/2", addrs: []string{"redis:6379"}, db: 2},
		{url: "redis://:hunter2@redis:6379/0", addrs: []string{"redis:6379"}, password: "hunter2"},
		{url: "rediss://u:hunter2@redis.example.com:6380", addrs: []string{"redis.example.com:6380"}, user: "u", password: "hunter2", tls: true},
		{url: "redis://127.0.0.1", addrs: []string{"127.0.0.1:6379"}},
		{url: "redis-sentinel://s1:26379,s2:26379,s3:26379/mymaster",
			addrs: []string{"s1:26379", "s2:26379", "s3:26379"}, master: "mymaster"},
		{url: "redis-sentinel://:hunter2@s1,s2:26380/mymaster?db=3",
			addrs: []string{"s1:26379", "s2:26380"}, master: "mymaster", db: 3, password: "hunter2"},
		{url: "rediss-sentinel://u:p%40ss@[::1]:26379,[fe80::1]/my%2Dmaster",
			addrs: []string{"[::1]:26379", "[fe80::1]:26379"}, master: "my-master", user: "u", password: "p@ss", tls: true},
		{url: "redis-cluster://c1:7000,c2:7001,c3:7002", addrs: []string{"c1:7000", "c2:7001", "c3:7002"}, cluster: true},
		{url: "redis-cluster://:hunter2@c1", addrs: []string{"c1:6379"}, password: "hunter2", cluster: true},
		{url: "rediss-cluster://c1:7000,c2:7001", addrs: []string{"c1:7000", "c2:7001"}, tls: true, cluster: true},
	} {
		o, err := parseRedisURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if !slices.Equal(o.Addrs, tc.addrs) || o.MasterName != tc.master || o.DB != tc.db || o.Username != tc.user ||
			o.Password != tc.password || (o.TLSConfig != nil) != tc.tls || o.IsClusterMode != tc.cluster {
			t.Errorf("%s: addrs %v master %q db %d user %q password %q tls %v cluster %v", tc.url,
				o.Addrs, o.MasterName, o.DB, o.Username, o.Password, o.TLSConfig != nil, o.IsClusterMode)
		}
	}
	// The sentinels' own credentials, when they have them.
	if o, err := parseRedisURL("redis-sentinel://:hunter2@s1/m?sentinel_password=hunter3&sentinel_username=sen"); err != nil ||
		o.SentinelPassword != "hunter3" || o.SentinelUsername != "sen" || o.Password != "hunter2" {
		t.Errorf("sentinel credentials: %+v %v", o, err)
	}
}

// Every malformed URL is refused, with an error naming the problem but never
// the password.
func TestValidateRedisURL(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://user:hunter2@redis:6379", "must start with redis://"},
		{"redis:/hunter2@redis", "must start with redis://"},
		{"unix:///run/hunter2.sock", "must start with redis://"},
		{"redis://:hunter2@redis:notaport", "not a valid redis:// URL"},
		{"redis://:hunter2@redis:6379/x", "not a valid redis:// URL"},
		{"redis-sentinel://:hunter2@s1:26379,s2:26379", "needs the master's name"},
		{"redis-sentinel://:hunter2@s1:26379/", "needs the master's name"},
		{"redis-sentinel://:hunter2@/mymaster", "needs at least one host:port"},
		{"redis-sentinel://:hunter2@s1:26379,,s2/mymaster", "address 2 of 3 is empty"},
		{"redis-sentinel://:hunter2@s1:hunter2/mymaster", "address 1 of 1 has no valid port"},
		{"redis-sentinel://:hunter2@s1:0/mymaster", "address 1 of 1 has no valid port"},
		{"redis-sentinel://:hunter2@s1:70000/mymaster", "address 1 of 1 has no valid port"},
		{"redis-sentinel://:hunter2@::1:26379/mymaster", "without [brackets]"},
		{"redis-sentinel://:hunter2@:26379/mymaster", "has no host"},
		{"redis-sentinel://:hunter2@s1/mymaster/0", "one path segment"},
		{"redis-sentinel://:hunter2@s1/mymaster?db=hunter2", "?db= must be a database number"},
		{"redis-sentinel://:hunter2@s1/mymaster?db=-1", "?db= must be a database number"},
		{"redis-sentinel://:hunter2@s1/mymaster?pasword=hunter2", `does not take the query parameter "pasword"`},
		{"redis-sentinel://:hunter2%zz@s1/mymaster", "badly percent-encoded"},
		{"redis-sentinel://:hunter#2@s1/mymaster", "no #fragment"},
		{"redis-cluster://:hunter2@c1:7000,c2:7001/0", "takes no path"},
		{"redis-cluster://:hunter2@c1:7000?db=1", `does not take the query parameter "db"`},
		{"redis-cluster://:hunter2@", "needs at least one host:port"},
		{"rediss-cluster://:hunter2@c1:7000,c2:hunter2", "address 2 of 2 has no valid port"},
	} {
		err := ValidateRedisURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one about %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter") {
			t.Errorf("%s: the error repeats a secret: %v", tc.url, err)
		}
	}
	for _, u := range []string{"redis://redis:6379/0", "redis-sentinel://s1:26379,s2:26379/mymaster?db=0",
		"redis-cluster://c1:7000,c2:7001,c3:7002", "rediss-sentinel://s1/m", "rediss-cluster://c1"} {
		if err := ValidateRedisURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// FuzzParseRedisURL: whatever --redis-url holds, parsing does not panic, a
// URL it accepts has an address, and its error never repeats the password.
func FuzzParseRedisURL(f *testing.F) {
	const password = "Pw0rdMarker"
	for _, s := range [][2]string{
		{"redis", "redis:6379/2"}, {"rediss", "r.example.com:6380"}, {"redis-sentinel", "s1:26379,s2/mymaster?db=3"},
		{"rediss-sentinel", "[::1]:26379,[fe80::1]/my%2Dmaster?sentinel_password=x"}, {"redis-cluster", "c1:7000,c2:7001"},
		{"redis-cluster", "c1:7000/0"}, {"redis-sentinel", "s1:0/m"}, {"http", "x"}, {"redis-sentinel", "s1/m?pasword=" + password},
		{"redis-sentinel", "::1:26379/m"}, {"redis-sentinel", "s1/m#frag"}, {"rediss-cluster", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, scheme, rest string) {
		u := scheme + "://:" + password + "@" + rest
		o, err := parseRedisURL(u)
		if err != nil {
			// The rest is the fuzzer's: a query parameter's name is quoted
			// on purpose, so only a password in the user part counts.
			if strings.Contains(err.Error(), password) && !strings.Contains(scheme+rest, password) {
				t.Fatalf("%q: the error repeats the password: %v", u, err)
			}
			return
		}
		if len(o.Addrs) == 0 {
			t.Fatalf("%q accepted without an address", u)
		}
	})
}

// go-redis's query options (timeouts, pool, TLS) are read by go-redis's own
// URL parsers under every form, and reach the options.
func TestParseRedisURLOptions(t *testing.T) {
	o, err := parseRedisURL("rediss://:hunter2@r:6380/1?dial_timeout=2s&read_timeout=300ms&write_timeout=1&pool_size=20&min_idle_conns=2&client_name=meterr&skip_verify=true")
	if err != nil {
		t.Fatal(err)
	}
	if o.DialTimeout != 2*time.Second || o.ReadTimeout != 300*time.Millisecond || o.WriteTimeout != time.Second || o.PoolSize != 20 ||
		o.MinIdleConns != 2 || o.ClientName != "meterr" || o.TLSConfig == nil || !o.TLSConfig.InsecureSkipVerify || o.DB != 1 || o.Password != "hunter2" {
		t.Errorf("redis:// options: %+v", o)
	}
	o, err = parseRedisURL("redis-sentinel://:hunter2@s1,s2/m?db=1&sentinel_password=x&dial_timeout=2s&pool_size=10&pool_timeout=250ms&conn_max_idle_time=5m")
	if err != nil {
		t.Fatal(err)
	}
	if o.DialTimeout != 2*time.Second || o.PoolSize != 10 || o.PoolTimeout != 250*time.Millisecond || o.ConnMaxIdleTime != 5*time.Minute ||
		o.DB != 1 || o.SentinelPassword != "x" || o.Password != "hunter2" || o.MasterName != "m" || len(o.Addrs) != 2 {
		t.Errorf("sentinel options: %+v", o)
	}
	o, err = parseRedisURL("rediss-cluster://:hunter2@c1,c2:7001?max_redirects=5&read_timeout=1s&skip_verify=true")
	if err != nil {
		t.Fatal(err)
	}
	if o.MaxRedirects != 5 || o.ReadTimeout != time.Second || !o.IsClusterMode ||
		o.TLSConfig == nil || !o.TLSConfig.InsecureSkipVerify || o.TLSConfig.MinVersion != tls.VersionTLS12 || o.Password != "hunter2" {
		t.Errorf("cluster options: %+v", o)
	}
	// Without skip_verify, certificates are checked.
	if o, err := parseRedisURL("rediss-cluster://c1"); err != nil || o.TLSConfig.InsecureSkipVerify {
		t.Errorf("rediss-cluster without skip_verify: %+v %v", o, err)
	}
	// Refused: what the auth server sets itself, what bypasses the form, a
	// malformed value; the parameter is named, the password never.
	for _, tc := range []struct{ url, want string }{
		{"redis://:hunter2@r/0?max_retries=3", `"max_retries": the auth server makes one attempt`},
		{"redis-sentinel://:hunter2@s1/m?dialer_retries=5", `"dialer_retries"`},
		{"redis-sentinel://:hunter2@s1/m?addr=s2:26379", `"addr"`},
		{"redis-sentinel://:hunter2@s1/m?master_name=other", `"master_name"`},
		{"redis-cluster://:hunter2@c1?password=hunter3", `"password"`},
		{"redis://:hunter2@r/0?dial_timeout=soon", "dial_timeout"},
		{"redis-cluster://:hunter2@c1?pool_size=many", "pool_size"},
		{"redis-sentinel://:hunter2@s1/m?route_by_latency=true", `"route_by_latency": the counts are read and written on the masters`},
		{"redis-cluster://:hunter2@c1?read_only=true", `"read_only"`},
		{"redis-sentinel://:hunter2@s1/m?cluster_only_option=1", `does not take the query parameter "cluster_only_option"`},
		{"redis://:hunter2@r/0?pasword=hunter2", `does not take the query parameter "pasword"`},
	} {
		err := ValidateRedisURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one about %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter") {
			t.Errorf("%s: the error repeats a secret: %v", tc.url, err)
		}
	}
}

// The URL's options win over --redis-timeout and the auth server's
// defaults; what it leaves unset gets them.
func TestNewRedisURLOptionsWin(t *testing.T) {
	l, err := NewRedis(RedisOptions{URL: "redis://127.0.0.1:1/0?read_timeout=2s&pool_size=8", Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, ok := l.client.(*redis.Client)
	if !ok {
		t.Fatalf("client %T", l.client)
	}
	o := c.Options()
	if o.ReadTimeout != 2*time.Second || o.PoolSize != 8 {
		t.Errorf("the URL's options lost: read timeout %v, pool size %d", o.ReadTimeout, o.PoolSize)
	}
	if o.WriteTimeout != 50*time.Millisecond || o.DialTimeout != time.Second || o.MinIdleConns != 4 || o.MaxRetries > 0 { // go-redis stores -1 (no retries) as 0
		t.Errorf("defaults not applied: write %v dial %v min idle %d retries %d", o.WriteTimeout, o.DialTimeout, o.MinIdleConns, o.MaxRetries)
	}
}
