// Package sweeper enforces connection deadlines coarsely: a Listener whose
// connections' read and write deadlines are checked by one sweep every
// interval (--deadline-sweep) instead of a runtime timer per deadline.
package sweeper

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// Listener hands out connections whose read and write deadlines are
// enforced by one sweep every interval instead of a runtime timer per
// deadline.
//
// Why: net/http moves a keep-alive connection's deadlines five times per
// request when every timeout is set (idle, header, whole request, write, and
// clearing it), and each move re-arms a timer; on this server that was 7-9%
// of the throughput, as much as everything the handler does. A timeout of 5 s
// or more does not need to fire to the microsecond: here a deadline is an
// atomic store, and the sweep forces the real deadline into the past for
// connections whose time is up, which ends a blocked Read or Write exactly
// as the real deadline would, at most one interval late. A deadline already
// in the past when set (net/http uses one to cut short its own background
// read) goes to the real connection at once.
type Listener struct {
	net.Listener
	interval time.Duration
	clock    clock.WithTicker
	// swept, when set, is called after each sweep (tests wait for it).
	swept func()
	base  time.Time
	// now is the time of the last sweep, in nanoseconds since base.
	now atomic.Int64

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
}

// aLongTimeAgo is what net/http itself uses to end a blocked Read at once.
var aLongTimeAgo = time.Unix(1, 0)

// New wraps ln: its connections' deadlines fire at most interval late,
// timed by clk (the real clock outside tests: net/http sets deadlines from
// time.Now).
func New(ln net.Listener, interval time.Duration, clk clock.WithTicker) *Listener {
	return newListener(ln, interval, clk, nil)
}

func newListener(ln net.Listener, interval time.Duration, clk clock.WithTicker, swept func()) *Listener {
	l := &Listener{Listener: ln, interval: interval, clock: clk, swept: swept, base: clk.Now(),
		conns: map[*conn]struct{}{}}
	// Past deadlines (at 1, see at) count as past before the first sweep.
	l.now.Store(1)
	go l.sweep()
	return l
}

func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &conn{Conn: c, l: l}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[cc] = struct{}{}
	l.mu.Unlock()
	return cc, nil
}

// Close stops accepting. The sweep goes on until the last connection
// accepted is closed: http.Server.Shutdown closes the listener first and
// then waits for those connections, whose timeouts must still fire.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

func (l *Listener) sweep() {
	t := l.clock.NewTicker(l.interval)
	defer t.Stop()
	for range t.C() {
		now := int64(l.clock.Since(l.base))
		l.now.Store(now)
		l.mu.Lock()
		for c := range l.conns {
			c.expire(&c.read, forcedRead, now)
			c.expire(&c.write, forcedWrite, now)
		}
		done := l.closed && len(l.conns) == 0
		l.mu.Unlock()
		if l.swept != nil {
			l.swept()
		}
		if done {
			return
		}
	}
}

// at returns t as nanoseconds since l.base (monotonic when t has a monotonic
// reading, as net/http's deadlines do), at least 1; 0 stands for no deadline.
func (l *Listener) at(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(l.base)), 1)
}

const (
	forcedRead uint32 = 1 << iota
	forcedWrite
)

// conn is a connection of a Listener.
type conn struct {
	net.Conn
	l *Listener
	// read and write are the deadlines, as Listener.at returns.
	read, write atomic.Int64
	// forced has a bit set while the real connection's read or write
	// deadline is in the past. Changes to it and to the real deadlines are
	// made under mu.
	forced atomic.Uint32
	mu     sync.Mutex
	once   sync.Once
}

func (c *conn) SetReadDeadline(t time.Time) error {
	return c.set(&c.read, forcedRead, t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	return c.set(&c.write, forcedWrite, t)
}

func (c *conn) SetDeadline(t time.Time) error {
	return errors.Join(c.set(&c.read, forcedRead, t), c.set(&c.write, forcedWrite, t))
}

func (c *conn) set(d *atomic.Int64, bit uint32, t time.Time) error {
	at := c.l.at(t)
	// A deadline already past acts now, not at the next sweep (net/http
	// ends its background read with time.Unix(1, 0)); the clock is read
	// only for a deadline within a sweep of the last one and after it.
	if at != 0 && (at <= c.l.now.Load() ||
		(at <= c.l.now.Load()+int64(c.l.interval) && at <= max(int64(c.l.clock.Since(c.l.base)), 1))) {
		c.mu.Lock()
		defer c.mu.Unlock()
		d.Store(at)
		c.forced.Or(bit)
		return c.real(bit, aLongTimeAgo)
	}
	d.Store(at)
	// The store above comes before this load, and the sweep sets the bit
	// before it reads the deadline again: one of the two sees the other.
	if c.forced.Load()&bit == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.forced.Load()&bit == 0 {
		return nil
	}
	if at := d.Load(); at != 0 && at <= c.l.now.Load() {
		return nil // expired again meanwhile
	}
	c.forced.And(^bit)
	return c.real(bit, time.Time{})
}

// expire forces the real deadline into the past when the coarse one has
// passed.
func (c *conn) expire(d *atomic.Int64, bit uint32, now int64) {
	if at := d.Load(); at == 0 || at > now || c.forced.Load()&bit != 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.forced.Load()&bit != 0 {
		return
	}
	c.forced.Or(bit)
	if at := d.Load(); at == 0 || at > now {
		// Moved on since: a setter that saw no bit needs none.
		c.forced.And(^bit)
		return
	}
	_ = c.real(bit, aLongTimeAgo)
}

func (c *conn) real(bit uint32, t time.Time) error {
	if bit == forcedRead {
		return c.Conn.SetReadDeadline(t)
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite keeps net/http's graceful close (it looks for this method).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
