// Package ratelimit counts the auth server's requests per key in fixed
// windows: in this replica's memory (Memory) or shared by every replica in
// Redis (Redis). Both implement the decision's one limiter interface
// (authz.Limiter): Take and Peek of an identity (quota.ID) against a limit
// (quota.Limit: a count per window, the window's length and alignment
// data that comes with the limit). It knows nothing of keys, records or
// HTTP; the record loader calls Forget when a key's record goes.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/meterr/meterr-operator/internal/quota"
)

const limiterShards = 64

// Memory counts in this replica's memory. Counters live in shards, each
// with its own mutex, so concurrent requests for different keys rarely
// contend. A counter from an earlier window is reset when next touched.
//
// A counter is found by its identity's quota.Key, and the map holds the
// counter itself. The decision passes the key it computed when the record
// was loaded (quota.ID.Key), so a request reads neither the id nor a stored
// copy of it, and then one map slot: with 100,000 keys every read of another place
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

// window is a counter: the number of its window (quota.Window.Index) and
// what was spent in it.
type window struct {
	n     int64
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

// Take spends one request of id's count in limit's current window. ok is
// false when the window's count is already used up; then nothing is spent
// and remaining is 0.
func (l *Memory) Take(_ context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time, bool) {
	n, reset := limit.Window.Index(now)
	s := l.shard(id.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.at[id.Key]
	if w.n != n {
		w = window{n: n}
	}
	if w.count >= limit.Count {
		return 0, reset, false
	}
	w.count++
	s.at[id.Key] = w
	return limit.Count - w.count, reset, true
}

// Peek reports what is left of id's count in limit's current window,
// without spending.
func (l *Memory) Peek(_ context.Context, id quota.ID, limit quota.Limit, now time.Time) (int64, time.Time) {
	n, reset := limit.Window.Index(now)
	s := l.shard(id.Key)
	s.mu.Lock()
	w := s.at[id.Key]
	s.mu.Unlock()
	if w.n != n {
		return limit.Count, reset
	}
	return max(limit.Count-w.count, 0), reset
}

// Forget drops everything counted for id.
func (l *Memory) Forget(id string) {
	k := quota.Key(id)
	s := l.shard(k)
	s.mu.Lock()
	delete(s.at, k)
	s.mu.Unlock()
}
