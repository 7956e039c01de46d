package ratelimit

import (
	"slices"
	"strings"
	"testing"
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
