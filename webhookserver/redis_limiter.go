package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// What a RedisLimiter does while Redis cannot be reached (--redis-failure-mode).
const (
	// FailOpen counts in this replica's memory meanwhile: limits still hold,
	// per replica, as without Redis.
	FailOpen = "open"
	// FailClosed refuses requests of limited keys with rate_limit_exceeded
	// (and Retry-After: 1) meanwhile; unlimited keys are not affected.
	FailClosed = "closed"
)

// RedisURLEnv is read when --redis-url is empty, so the URL (and its
// password) can come from a Secret rather than the command line.
const RedisURLEnv = "MTR_REDIS_URL"

// Defaults of the Redis flags.
const (
	DefaultRedisTimeout     = 100 * time.Millisecond
	DefaultRedisFailureMode = FailOpen
	// redisBackoff is how long the limiter goes without trying Redis after a
	// failure, so an outage costs each request nothing rather than a timeout.
	redisBackoff = time.Second
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

// RedisLimiter is a Limiter shared by every auth server replica through one
// Redis: counts are exact across replicas. Each window is one Redis key,
// "meterr:rl:{<id>}:<hour>", that expires after its hour. While Redis cannot
// be reached it fails open (counting in memory) or closed (see FailOpen,
// FailClosed), and tries Redis again a second later.
type RedisLimiter struct {
	client   redis.UniversalClient
	failOpen bool
	fallback *MemoryLimiter
	// downUntil is when Redis may be tried again, in nanoseconds of mono;
	// 0 while Redis answers.
	downUntil atomic.Int64
	errors    prometheus.Counter
	log       logr.Logger
	// now is the server's clock: it picks the windows Forget drops.
	now func() time.Time
	// mono is the real clock of the backoff (never a test's frozen clock).
	mono func() time.Time
	// forgets is never closed: Forget may still be called (from a watch
	// that is winding down) after Close.
	forgets   chan string
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// RedisOptions configure NewRedisLimiter.
type RedisOptions struct {
	// URL is redis://[[user]:password@]host:port[/db] or rediss:// for TLS.
	URL string
	// Timeout bounds dialling and each command.
	Timeout time.Duration
	// FailureMode is FailOpen or FailClosed.
	FailureMode string
	// Registerer receives meterr_auth_limiter_errors_total; nil: none.
	Registerer prometheus.Registerer
	Log        logr.Logger
	// Now is the server's clock (for Forget's window and the backoff);
	// nil is time.Now.
	Now func() time.Time
}

// NewRedisLimiter connects to Redis lazily: it returns without waiting for
// Redis, and fails per its failure mode until Redis answers.
func NewRedisLimiter(o RedisOptions) (*RedisLimiter, error) {
	opts, err := redis.ParseURL(o.URL)
	if err != nil {
		// The URL may hold a password: never repeat it.
		return nil, errors.New("--redis-url is not a valid redis:// or rediss:// URL")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultRedisTimeout
	}
	opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = o.Timeout, o.Timeout, o.Timeout
	// Dialling (with a TLS handshake for rediss://) gets more than a command.
	opts.DialTimeout = max(o.Timeout, time.Second)
	opts.MaxRetries = -1 // a retry would double the wait; the next request tries again
	opts.PoolSize = max(opts.PoolSize, 64)
	opts.MinIdleConns = 4
	switch o.FailureMode {
	case "", FailOpen, FailClosed:
	default:
		return nil, fmt.Errorf("--redis-failure-mode must be %q or %q, not %q", FailOpen, FailClosed, o.FailureMode)
	}
	l := &RedisLimiter{
		client:   redis.NewClient(opts),
		failOpen: o.FailureMode != FailClosed,
		fallback: NewMemoryLimiter(),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meterr_auth_limiter_errors_total",
			Help: "Rate-limit checks that could not reach Redis and were decided by --redis-failure-mode.",
		}),
		log:     o.Log,
		now:     o.Now,
		mono:    time.Now,
		forgets: make(chan string, 4096),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	go l.forgetLoop()
	if o.Registerer != nil {
		if err := o.Registerer.Register(l.errors); err != nil {
			return nil, fmt.Errorf("registering limiter metrics: %w", err)
		}
	}
	return l, nil
}

// Close stops the limiter and closes the connections to Redis.
// It may be called more than once.
func (l *RedisLimiter) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		err = l.client.Close()
	})
	return err
}

// Ping checks that Redis answers.
func (l *RedisLimiter) Ping(ctx context.Context) error { return l.client.Ping(ctx).Err() }

func windowKey(id string, hour int64) string {
	// The braces make id a hash tag: a Redis Cluster keeps a key's windows
	// on one shard.
	return "meterr:rl:{" + id + "}:" + strconv.FormatInt(hour, 10)
}

// Take implements Limiter. When Redis cannot be reached it counts in memory
// (fail open) or returns ok false with a zero reset (fail closed).
func (l *RedisLimiter) Take(ctx context.Context, id string, limit int64, now time.Time) (int64, time.Time, bool) {
	hour, reset := windowOf(now)
	if l.available() {
		ttl := max(reset.Unix()-now.Unix(), 1) + 60
		// A client that hangs up must not cut the check short: that would
		// look like an outage (see failed).
		res, err := takeScript.Run(context.WithoutCancel(ctx), l.client, []string{windowKey(id, hour)}, limit, ttl).Int64Slice()
		if err == nil && len(res) == 2 {
			l.answered()
			if res[0] == 0 {
				return 0, reset, false
			}
			return max(limit-res[1], 0), reset, true
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

// Peek implements Limiter; when Redis cannot be reached it reports the
// in-memory count (fail open) or a zero reset (fail closed: no headers).
func (l *RedisLimiter) Peek(ctx context.Context, id string, limit int64, now time.Time) (int64, time.Time) {
	hour, reset := windowOf(now)
	if l.available() {
		n, err := l.client.Get(context.WithoutCancel(ctx), windowKey(id, hour)).Int64()
		if errors.Is(err, redis.Nil) {
			l.answered()
			return limit, reset
		}
		if err == nil {
			l.answered()
			return max(limit-n, 0), reset
		}
		l.failed(err)
	}
	if l.failOpen {
		return l.fallback.Peek(ctx, id, limit, now)
	}
	return 0, time.Time{}
}

// Forget implements Limiter: it drops the current and the previous window.
// The deletion runs in the background: Forget is called from the loop that
// keeps the index current, which must not wait for Redis. Should the queue
// be full, the windows are left to expire within the hour.
func (l *RedisLimiter) Forget(id string) {
	l.fallback.Forget(id)
	select {
	case l.forgets <- id:
	default:
	}
}

func (l *RedisLimiter) forgetLoop() {
	defer close(l.done)
	for {
		var id string
		select {
		case <-l.stop:
			return
		case id = <-l.forgets:
		}
		if !l.available() {
			continue
		}
		hour, _ := windowOf(l.now())
		if err := l.client.Del(context.Background(), windowKey(id, hour), windowKey(id, hour-1)).Err(); err != nil {
			l.failed(err)
			continue
		}
		l.answered()
	}
}

// available reports whether to try Redis. After a failure it says no for
// redisBackoff; then yes to exactly one caller, whose command probes Redis
// while the others keep to the failure mode.
func (l *RedisLimiter) available() bool {
	until := l.downUntil.Load()
	if until == 0 {
		return true
	}
	now := l.mono().UnixNano()
	return now >= until && l.downUntil.CompareAndSwap(until, now+int64(redisBackoff))
}

func (l *RedisLimiter) failed(err error) {
	l.errors.Inc()
	if errors.Is(err, redis.ErrPoolTimeout) {
		// Every connection is busy: a burst, not an outage. This request
		// follows the failure mode; the next ones try Redis again.
		return
	}
	if prev := l.downUntil.Swap(l.mono().Add(redisBackoff).UnixNano()); prev == 0 {
		// Once per outage, not per request.
		mode := FailClosed
		if l.failOpen {
			mode = FailOpen + " (counting in memory)"
		}
		l.log.Error(err, "redis unreachable; rate limits fail "+mode)
	}
}

// answered clears the backoff after Redis has answered again.
func (l *RedisLimiter) answered() {
	if l.downUntil.Load() != 0 && l.downUntil.Swap(0) != 0 {
		l.log.Info("redis reachable again; rate limits are shared")
	}
}

var _ Limiter = (*RedisLimiter)(nil)
