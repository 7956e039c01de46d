package quota

import (
	"strconv"
	"time"
)

// Window is a rate-limit window: fixed, Seconds long, aligned to multiples of
// its length since the Unix epoch, so an hour-long window starts on the UTC
// clock hour and a day-long one at 00:00 UTC. It is data: it travels with a
// key's limit from the record to the limiter's count and to every header
// that shows it (X-RateLimit-Reset, Retry-After, RateLimit-Policy's w= and
// name, RateLimit's name).
type Window struct{ seconds int64 }

// The windows. Every key record's limit is Hourly today; Daily is the
// second length the tests prove flows through unchanged code.
var (
	Hourly = Window{seconds: 3600}
	Daily  = Window{seconds: 86400}
)

// WindowOf returns the window of length d, at least one second, in whole
// seconds.
func WindowOf(d time.Duration) Window {
	return Window{seconds: max(int64(d/time.Second), 1)}
}

// Seconds is the window's length, the w= of RateLimit-Policy.
func (w Window) Seconds() int64 { return w.seconds }

// Name is the policy's name in the IETF RateLimit headers and in texts:
// "hourly", "daily", else the length ("900s").
func (w Window) Name() string {
	switch w.seconds {
	case 3600:
		return "hourly"
	case 86400:
		return "daily"
	}
	return strconv.FormatInt(w.seconds, 10) + "s"
}

// Index returns the number of the window now falls in (windows are numbered
// from the epoch), and when it ends.
func (w Window) Index(now time.Time) (n int64, end time.Time) {
	s, l := now.Unix(), w.seconds
	n = s / l
	if s < 0 && s%l != 0 {
		n--
	}
	return n, time.Unix((n+1)*l, 0).UTC()
}

// Limit is a count per window; a zero Count means unlimited.
type Limit struct {
	Count  int64
	Window Window
}

// PerHour is the limit of n requests an hour.
func PerHour(n int64) Limit { return Limit{Count: n, Window: Hourly} }

// Unlimited reports whether the limit counts nothing.
func (l Limit) Unlimited() bool { return l.Count <= 0 }

// ID is a rate-limit identity as a limiter receives it: its 64-bit Key
// (what the in-memory limiter counts under) and, read only by a limiter that
// must send it elsewhere (Redis), its name. The name is resolved on demand,
// so a decision for the in-memory limiter never reads the identity's bytes.
type ID struct {
	Key  uint64
	src  string
	name func(string) string
}

// NewID is the identity whose Key is key and whose name is name(src); name
// must be a function of src alone.
func NewID(key uint64, src string, name func(string) string) ID {
	return ID{Key: key, src: src, name: name}
}

// Named is the identity called name.
func Named(name string) ID { return ID{Key: Key(name), src: name} }

// Name returns the identity's name.
func (id ID) Name() string {
	if id.name == nil {
		return id.src
	}
	return id.name(id.src)
}
