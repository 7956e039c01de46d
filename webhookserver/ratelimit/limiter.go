// Package ratelimit counts the auth server's requests per key in hourly
// windows: in this replica's memory (Memory) or shared by every replica in
// Redis (Redis), behind one interface (Limiter). It knows nothing of keys,
// records or HTTP; the decision (package authz) uses Take and Peek, and the
// record loader calls Forget when a key's record goes.
package ratelimit

import (
	"context"
	"strings"
	"sync"
	"time"
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
// A shard's map only finds a counter's place: a request reads it and updates
// the counter in place, so the map, whose keys are copies made when a
// counter is created, is written only when a key is first seen or
// forgotten. (Assigning to a string-keyed map replaces the stored key with
// the caller's string on every call, which would also keep whatever that
// string points into alive.)
type Memory struct {
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	at      map[string]uint32
	windows []window
	free    []uint32
	// Keep shards on separate cache lines.
	_ [16]byte
}

type window struct {
	hour  int64
	count int64
}

// NewMemory returns an empty in-memory limiter.
func NewMemory() *Memory {
	l := &Memory{}
	for i := range l.shards {
		l.shards[i].at = map[string]uint32{}
	}
	return l
}

func (l *Memory) shard(id string) *limiterShard {
	// FNV-1a, inline so the string is not converted to bytes.
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return &l.shards[h%limiterShards]
}

// window returns id's counter, creating it; s.mu must be held.
func (s *limiterShard) window(id string) *window {
	i, ok := s.at[id]
	if !ok {
		if n := len(s.free); n > 0 {
			i = s.free[n-1]
			s.free = s.free[:n-1]
			s.windows[i] = window{}
		} else {
			i = uint32(len(s.windows))
			s.windows = append(s.windows, window{})
		}
		s.at[strings.Clone(id)] = i
	}
	return &s.windows[i]
}

// Take implements Limiter.
func (l *Memory) Take(_ context.Context, id string, limit int64, now time.Time) (int64, time.Time, bool) {
	hour, reset := windowOf(now)
	s := l.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.window(id)
	if w.hour != hour {
		*w = window{hour: hour}
	}
	if w.count >= limit {
		return 0, reset, false
	}
	w.count++
	return limit - w.count, reset, true
}

// Peek implements Limiter.
func (l *Memory) Peek(_ context.Context, id string, limit int64, now time.Time) (int64, time.Time) {
	hour, reset := windowOf(now)
	s := l.shard(id)
	s.mu.Lock()
	var w window
	if i, ok := s.at[id]; ok {
		w = s.windows[i]
	}
	s.mu.Unlock()
	if w.hour != hour {
		return limit, reset
	}
	return max(limit-w.count, 0), reset
}

// Forget implements Limiter.
func (l *Memory) Forget(id string) {
	s := l.shard(id)
	s.mu.Lock()
	if i, ok := s.at[id]; ok {
		delete(s.at, id)
		s.free = append(s.free, i)
	}
	s.mu.Unlock()
}

var _ Limiter = (*Memory)(nil)
