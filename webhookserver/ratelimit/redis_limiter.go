package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/meterr/meterr-operator/internal/quota"
)

// What the Redis limiter does while Redis cannot be reached (--redis-failure-mode).
const (
	// FailOpen counts in this replica's memory meanwhile: limits still hold,
	// per replica, as without Redis.
	FailOpen = "open"
	// FailClosed refuses requests of limited keys with 503
	// rate_limit_unavailable (and Retry-After: 1) meanwhile; unlimited keys
	// are not affected.
	FailClosed = "closed"
)

// RedisURLEnv is read when --redis-url is empty, so the URL (and its
// password) can come from a Secret rather than the command line.
const RedisURLEnv = "MTR_REDIS_URL"

// Defaults of the Redis flags.
const (
	DefaultRedisTimeout     = 100 * time.Millisecond
	DefaultRedisFailureMode = FailOpen
	// DefaultRedisProbeInterval is how often a limiter that has seen Redis
	// fail pings it in the background. Requests do not try Redis meanwhile,
	// so an outage costs them nothing rather than a timeout, and the first
	// request after the probe has seen Redis answer is counted there again.
	DefaultRedisProbeInterval = time.Second
)

// takeScript spends one request in window key KEYS[1] unless ARGV[1] are
// already spent; ARGV[2] is the key's time to live in seconds. It answers
// {1, count} or {0, count}: atomically, so replicas sharing Redis never
// admit more than the limit between them.
var takeScript = redis.NewScript(`
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c >= tonumber(ARGV[1]) then
  return {0, c}
end
c = redis.call('INCR', KEYS[1])
if c == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {1, c}
`)

// Redis is a limiter shared by every auth server replica through one
// Redis server (a single one, a Sentinel-managed master or a Cluster): counts are
// exact across replicas. Each window is one Redis key,
// "meterr:rl:{<id>}:<hour>", that expires after its hour. While Redis cannot
// be reached it fails open (counting in memory) or closed (see FailOpen,
// FailClosed), and a background probe pings Redis every ProbeInterval until
// it answers again.
type Redis struct {
	client   redis.UniversalClient
	failOpen bool
	fallback *Memory
	// down is set by a failed command and cleared by the probe: while it
	// is set, requests follow the failure mode without trying Redis.
	down    atomic.Bool
	errors  prometheus.Counter
	healthy prometheus.Gauge
	log     logr.Logger
	// now is the server's clock: it picks the windows Forget drops.
	now func() time.Time
	// probeEvery is the probe's interval, probeTimeout bounds one probe.
	probeEvery, probeTimeout time.Duration
	// wake starts the probe after a failure.
	wake chan struct{}
	// forgets is never closed: Forget may still be called (from a watch
	// that is winding down) after Close.
	forgets chan string
	// stopCtx is cancelled by Close, which then waits for both loops.
	stopCtx   context.Context
	stop      context.CancelFunc
	loops     sync.WaitGroup
	closeOnce sync.Once
}

// RedisOptions configure NewRedis.
type RedisOptions struct {
	// URL is one of the forms parseRedisURL documents: redis:// or
	// rediss:// for one Redis, redis-sentinel:// for a Sentinel-managed
	// master, redis-cluster:// for a Cluster.
	URL string
	// Timeout bounds dialling and each command.
	Timeout time.Duration
	// FailureMode is FailOpen or FailClosed.
	FailureMode string
	// Registerer receives meterr_auth_limiter_errors_total; nil: none.
	Registerer prometheus.Registerer
	Log        logr.Logger
	// Now is the server's clock (for Forget's window); nil is time.Now.
	Now func() time.Time
	// ProbeInterval is how often Redis is pinged while it is believed
	// down; 0 is DefaultRedisProbeInterval. Not a flag: tests shorten it.
	ProbeInterval time.Duration
}

// NewRedis connects to Redis lazily: it returns without waiting for
// Redis, and fails per its failure mode until Redis answers.
func NewRedis(o RedisOptions) (*Redis, error) {
	opts, err := parseRedisURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultRedisTimeout
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultRedisProbeInterval
	}
	// The URL's own options (read_timeout=..., pool_size=...) win; what it
	// leaves unset comes from --redis-timeout and these defaults.
	setDefault(&opts.ReadTimeout, o.Timeout)
	setDefault(&opts.WriteTimeout, o.Timeout)
	setDefault(&opts.PoolTimeout, o.Timeout)
	// Dialling (with a TLS handshake for rediss://) gets more than a command.
	setDefault(&opts.DialTimeout, max(o.Timeout, time.Second))
	setDefault(&opts.PoolSize, 64)
	setDefault(&opts.MinIdleConns, 4)
	// Never from the URL (parseRedisURL refuses them):
	opts.MaxRetries = -1 // a retry would double the wait; the next request tries again
	// One dial per attempt: go-redis would otherwise dial five times, with
	// pauses, before a request may follow the failure mode.
	opts.DialerRetries = 1
	switch o.FailureMode {
	case "", FailOpen, FailClosed:
	default:
		return nil, fmt.Errorf("--redis-failure-mode must be %q or %q, not %q", FailOpen, FailClosed, o.FailureMode)
	}
	l := &Redis{
		failOpen: o.FailureMode != FailClosed,
		fallback: NewMemory(),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meterr_auth_limiter_errors_total",
			Help: "Rate-limit checks that could not reach Redis and were decided by --redis-failure-mode.",
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meterr_auth_limiter_redis_up",
			Help: "1 while rate limits are counted in Redis, 0 while Redis is believed down and --redis-failure-mode decides.",
		}),
		log:          o.Log,
		now:          o.Now,
		probeEvery:   o.ProbeInterval,
		probeTimeout: opts.DialTimeout + o.Timeout,
		wake:         make(chan struct{}, 1),
		forgets:      make(chan string, 4096),
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.healthy.Set(1)
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{l.errors, l.healthy} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering limiter metrics: %w", err)
			}
		}
	}
	goRedisLogOnce.Do(func() { redis.SetLogger(goRedisLog{o.Log.WithName("go-redis")}) })
	l.client = redis.NewUniversalClient(opts)
	l.stopCtx, l.stop = context.WithCancel(context.Background())
	l.loops.Add(2)
	go l.forgetLoop()
	go l.probeLoop()
	return l, nil
}

// Close stops the limiter and closes the connections to Redis.
// It may be called more than once.
func (l *Redis) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.stop()
		l.loops.Wait()
		err = l.client.Close()
	})
	return err
}

// Ping checks that Redis answers: the current master of a Sentinel setup;
// every master of a Cluster, each reporting the cluster's state ok (a node
// that answers while the cluster is down would refuse every check).
func (l *Redis) Ping(ctx context.Context) error {
	c, ok := l.client.(*redis.ClusterClient)
	if !ok {
		return l.client.Ping(ctx).Err()
	}
	return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errors.New("the cluster's state is not ok")
		}
		return err
	})
}

// Healthy reports whether the limiter counts in Redis: false from a failed
// command until the background probe has seen Redis answer again.
func (l *Redis) Healthy() bool { return !l.down.Load() }

// windowKey is the Redis key of id's count in window n of w. An hourly
// window's key names the hour alone, as it always has, so replicas of
// another version share the count; any other length is named in the key.
func windowKey(id string, w quota.Window, n int64) string {
	// The braces make id a hash tag: a Redis Cluster keeps a key's windows
	// on one shard.
	if w == quota.Hourly {
		return "meterr:rl:{" + id + "}:" + strconv.FormatInt(n, 10)
	}
	return "meterr:rl:{" + id + "}:" + strconv.FormatInt(w.Seconds(), 10) + "s:" + strconv.FormatInt(n, 10)
}

// Take is Memory.Take counted in Redis, under id's name. While Redis cannot
// be reached it counts in memory (fail open) or returns ok false with a zero
// reset (fail closed).
func (l *Redis) Take(ctx context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time, bool) {
	n, reset := limit.Window.Index(now)
	if l.Healthy() {
		ttl := max(reset.Unix()-now.Unix(), 1) + 60
		// A client that hangs up must not cut the check short: that would
		// look like an outage (see failed).
		res, err := takeScript.Run(context.WithoutCancel(ctx), l.client, []string{windowKey(id.Name(), limit.Window, n)}, limit.Count, ttl).Int64Slice()
		if err == nil && len(res) == 2 {
			if res[0] == 0 {
				return 0, reset, false
			}
			return max(limit.Count-res[1], 0), reset, true
		}
		if err == nil {
			err = fmt.Errorf("unexpected answer from the rate-limit script: %v", res)
		}
		l.failed(err)
	}
	if l.failOpen {
		return l.fallback.Take(ctx, id, limit, now)
	}
	return 0, time.Time{}, false
}

// Peek is Memory.Peek counted in Redis; when Redis cannot be reached it
// reports the in-memory count (fail open) or a zero reset (fail closed: no
// headers).
func (l *Redis) Peek(ctx context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time) {
	n, reset := limit.Window.Index(now)
	if l.Healthy() {
		c, err := l.client.Get(context.WithoutCancel(ctx), windowKey(id.Name(), limit.Window, n)).Int64()
		if errors.Is(err, redis.Nil) {
			return limit.Count, reset
		}
		if err == nil {
			return max(limit.Count-c, 0), reset
		}
		l.failed(err)
	}
	if l.failOpen {
		return l.fallback.Peek(ctx, id, limit, now)
	}
	return 0, time.Time{}
}

// Forget drops id's count: the current and the previous hourly window (the
// window every key record has).
// The deletion runs in the background: Forget is called from the loop that
// keeps the index current, which must not wait for Redis. Should the queue
// be full, the windows are left to expire within the hour.
func (l *Redis) Forget(id string) {
	l.fallback.Forget(id)
	select {
	case l.forgets <- id:
	default:
	}
}

func (l *Redis) forgetLoop() {
	defer l.loops.Done()
	for {
		var id string
		select {
		case <-l.stopCtx.Done():
			return
		case id = <-l.forgets:
		}
		if !l.Healthy() {
			continue
		}
		// The two windows share id's hash tag: one Cluster slot, one DEL.
		hour, _ := quota.Hourly.Index(l.now())
		if err := l.client.Del(l.stopCtx, windowKey(id, quota.Hourly, hour), windowKey(id, quota.Hourly, hour-1)).Err(); err != nil && l.stopCtx.Err() == nil {
			l.failed(err)
		}
	}
}

// probeLoop waits for a failure, then pings Redis every probeEvery until it
// answers, and marks it healthy again: recovery is found in the background,
// not by a request, so every replica counts in Redis again from its first
// request after the probe.
func (l *Redis) probeLoop() {
	defer l.loops.Done()
	for {
		select {
		case <-l.stopCtx.Done():
			return
		case <-l.wake:
		}
		tick := time.NewTicker(l.probeEvery)
		for l.down.Load() {
			select {
			case <-l.stopCtx.Done():
				tick.Stop()
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(l.stopCtx, l.probeTimeout)
			err := l.Ping(ctx)
			cancel()
			if err == nil {
				l.recovered()
			}
		}
		tick.Stop()
	}
}

func (l *Redis) failed(err error) {
	l.errors.Inc()
	if errors.Is(err, redis.ErrPoolTimeout) {
		// Every connection is busy: a burst, not an outage. This request
		// follows the failure mode; the next ones try Redis again.
		return
	}
	if !l.down.Swap(true) {
		// Once per outage, not per request. go-redis's errors name the
		// address at most, never the password.
		l.healthy.Set(0)
		mode := FailClosed + " (refusing limited keys with 503 rate_limit_unavailable)"
		if l.failOpen {
			mode = FailOpen + " (counting in memory)"
		}
		l.log.Error(err, "redis unreachable; rate limits fail "+mode, "probeInterval", l.probeEvery.String())
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// recovered marks Redis healthy after the probe has seen it answer.
func (l *Redis) recovered() {
	if l.down.Swap(false) {
		l.healthy.Set(1)
		l.log.Info("redis reachable again; rate limits are shared")
	}
}

// goRedisLog sends go-redis's own messages (a failed dial, a new Sentinel
// master) to the limiter's log at verbosity 1 rather than to stderr: the
// limiter already logs an outage once and its end. They name addresses,
// never a password.
type goRedisLog struct{ log logr.Logger }

func (g goRedisLog) Printf(_ context.Context, format string, v ...any) {
	g.log.V(1).Info(fmt.Sprintf(format, v...))
}

// goRedisLogOnce: go-redis has one logger per process.
var goRedisLogOnce sync.Once

// setDefault sets *v to d when it is the zero value.
func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}
