// Package ratelimit counts the auth server's requests per key in hourly
// windows: in this replica's memory (Memory) or shared by every replica in
// Redis (Redis), behind one interface (Limiter). It knows nothing of keys,
// records or HTTP; the decision (package authz) uses Take and Peek, and the
// record loader calls Forget when a key's record goes.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/meterr/meterr-operator/internal/quota"
)

// windowSeconds is the length of a rate-limit window: one UTC clock hour.
const windowSeconds = 3600

// Limiter counts requests per key in fixed windows aligned to the UTC clock
// hour. id identifies a MeterrAPIKey (not a key version, so rotation does not
// reset the count); limit is its hourly limit, always >= 1; now comes from
// the caller's clock. Implementations must be safe for concurrent use. The
// in-memory one is Memory; Redis shares counts between replicas and decides
// on its own what to do when Redis is unreachable.
type Limiter interface {
	// Take spends one request. ok is false when the window's limit is
	// already used up; then nothing is spent and remaining is 0. A zero
	// reset with ok false means the count could not be checked (a shared
	// limiter failing closed): the request is refused without counters.
	Take(ctx context.Context, id string, limit int64, now time.Time) (remaining int64, reset time.Time, ok bool)
	// Peek reports the window's remaining requests without spending one; a
	// zero reset means unknown.
	Peek(ctx context.Context, id string, limit int64, now time.Time) (remaining int64, reset time.Time)
	// Forget drops everything counted for id.
	Forget(id string)
}

// windowOf returns the index of the UTC hour now falls in, and its end.
func windowOf(now time.Time) (hour int64, reset time.Time) {
	s := now.Unix()
	hour = s / windowSeconds
	if s < 0 && s%windowSeconds != 0 {
		hour--
	}
	return hour, time.Unix((hour+1)*windowSeconds, 0).UTC()
}

const limiterShards = 64

// Memory is a Limiter for one replica. Counters live in shards, each
// with its own mutex, so concurrent requests for different keys rarely
// contend. A counter from an earlier hour is reset when next touched.
//
// A counter is found by its id's quota.Key, and the map holds the counter
// itself. The decision passes the key it computed when the record was
// loaded (TakeKey), so a request reads neither the id nor a stored copy of
// it, and then one map slot: with 100,000 keys every read of another place
// is a cache miss, and those cost more than everything else the limiter
// does. Two ids share a counter only if their keys collide (see
// quota.Key). Nothing of an id is kept, so the limiter keeps no id's bytes
// alive.
type Memory struct {
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu sync.Mutex
	at map[uint64]window
	// Keep shards on separate cache lines.
	_ [48]byte
}

type window struct {
	hour  int64
	count int64
}

// NewMemory returns an empty in-memory limiter.
func NewMemory() *Memory {
	l := &Memory{}
	for i := range l.shards {
		l.shards[i].at = map[uint64]window{}
	}
	return l
}

func (l *Memory) shard(key uint64) *limiterShard { return &l.shards[key%limiterShards] }

// Take implements Limiter.
func (l *Memory) Take(ctx context.Context, id string, limit int64, now time.Time) (int64, time.Time, bool) {
	return l.TakeKey(ctx, quota.Key(id), limit, now)
}

// Peek implements Limiter.
func (l *Memory) Peek(ctx context.Context, id string, limit int64, now time.Time) (int64, time.Time) {
	return l.PeekKey(ctx, quota.Key(id), limit, now)
}

// TakeKey is Take of the id whose quota.Key is k.
func (l *Memory) TakeKey(_ context.Context, k uint64, limit int64, now time.Time) (int64, time.Time, bool) {
	hour, reset := windowOf(now)
	s := l.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.at[k]
	if w.hour != hour {
		w = window{hour: hour}
	}
	if w.count >= limit {
		return 0, reset, false
	}
	w.count++
	s.at[k] = w
	return limit - w.count, reset, true
}

// PeekKey is Peek of the id whose quota.Key is k.
func (l *Memory) PeekKey(_ context.Context, k uint64, limit int64, now time.Time) (int64, time.Time) {
	hour, reset := windowOf(now)
	s := l.shard(k)
	s.mu.Lock()
	w := s.at[k]
	s.mu.Unlock()
	if w.hour != hour {
		return limit, reset
	}
	return max(limit-w.count, 0), reset
}

// Forget implements Limiter.
func (l *Memory) Forget(id string) {
	k := quota.Key(id)
	s := l.shard(k)
	s.mu.Lock()
	delete(s.at, k)
	s.mu.Unlock()
}

var _ Limiter = (*Memory)(nil)
