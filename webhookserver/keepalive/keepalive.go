// Package keepalive serves the rest of an HTTP/1.1 keep-alive connection
// after net/http has served its first request (--keepalive-takeover).
//
// Why: an auth server answers tiny requests, and on this one net/http's
// per-request machinery outweighed the decision. Per answer, net/http
// clones the header map, sorts it, validates and writes it field by field;
// per request it starts and aborts a background read and moves the
// connection's deadlines five times. With the eight headers a rate-limited
// verify answer must carry, that was about 4 µs of the 16 µs of CPU a
// verify cost (docs/benchmarks.md).
//
// What stays net/http's: accepting, TLS and HTTP/2, the first request of
// every connection, and the parser: every request taken over is read by
// http.ReadRequest and then held to the checks net/http's server adds
// (one valid Host, valid header names and values, HTTP/1.x only, the
// header size limit). What is this package's: the keep-alive loop (one
// request at a time, pipelined requests answered in order) and the
// writing of an answer, which a handler makes through an
// http.ResponseWriter as always.
//
// A connection is taken over only when its first request is plain: HTTP/1.1
// without a body, Expect or "Connection: close" (net/http's reader cannot be
// read from after a hijack, so its body could not be). Later requests are
// answered whatever they are; as net/http does, the body of one is read and
// discarded before its answer, up to 256 KiB, through the parser's own
// body reader; when it is longer, or expected with 100-continue, or the
// request is HTTP/1.0 without keep-alive or asks for "Connection: close",
// the connection is closed after the answer. No body is ever read as the
// next request.
package keepalive

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meterr/meterr-operator/internal/ascii"
)

// Config says how connections taken over are served; the timeouts and the
// header limit are the http.Server's, so that a connection is held to the
// same rules whoever serves it.
type Config struct {
	// Handler answers every request, the first one included. On a
	// connection taken over, it must not keep w, w's header map or r past
	// its return (they are the connection's, reused for the next request),
	// and r.Context() is the connection's: it ends with the connection,
	// not with the request.
	Handler http.Handler
	// MaxHeaderBytes is how many bytes a request may take to read before it
	// gets 431 (net/http's MaxHeaderBytes plus its 4096 bytes of slack);
	// 0 is net/http's default.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's header once its first
	// byte has arrived, ReadTimeout reading the whole request (a body is
	// read after the handler), IdleTimeout the wait for that first byte,
	// and WriteTimeout the time from the end of a request's header to the
	// end of its answer. As in net/http, 0 is no limit, and a zero
	// ReadHeaderTimeout or IdleTimeout is ReadTimeout.
	ReadHeaderTimeout, ReadTimeout, IdleTimeout, WriteTimeout time.Duration
}

// Server takes over connections (see Handler) and serves them until they
// end or Shutdown ends them.
type Server struct {
	cfg Config

	// closing is set once Shutdown or Close has begun; it is read on
	// every request, so it is not under mu.
	closing atomic.Bool

	mu    sync.Mutex
	conns map[*conn]struct{}
	// done is closed when closing is set and conns is empty.
	done chan struct{}

	taken atomic.Int64
}

// New returns a Server that answers with cfg.Handler.
func New(cfg Config) *Server {
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = http.DefaultMaxHeaderBytes + 4096
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = cfg.ReadTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = cfg.ReadTimeout
	}
	return &Server{cfg: cfg, conns: map[*conn]struct{}{}, done: make(chan struct{})}
}

// TakenOver returns how many connections have been taken over so far.
func (s *Server) TakenOver() int64 { return s.taken.Load() }

// Handler is the http.Handler to give net/http: it answers the first
// request of a connection with cfg.Handler and, when the connection may go
// on (see the package comment), takes it over and serves it from then on.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveFirst) }

func (s *Server) serveFirst(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok || !plain(r) || s.isClosing() {
		s.cfg.Handler.ServeHTTP(w, r)
		return
	}
	nc, rw, err := hj.Hijack()
	if err != nil {
		// net/http may count the connection as hijacked already: it
		// can be neither answered nor closed from here.
		return
	}
	c, err := s.newConn(nc, rw.Reader)
	if err != nil {
		_ = nc.Close()
		return
	}
	if !s.add(c) {
		// Shutdown began meanwhile: answer this one request, then close.
		defer c.close()
		c.serveOne(r, true)
		return
	}
	s.taken.Add(1)
	// The request's context ends when this function returns, which is
	// when the connection ends: every request on it shares that context.
	c.serve(r.Context(), r)
}

// plain says whether r, a connection's first request, lets it be taken
// over.
func plain(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.ProtoMinor == 1 && !r.Close &&
		r.ContentLength == 0 && len(r.TransferEncoding) == 0 && len(r.Header["Expect"]) == 0
}

func (s *Server) isClosing() bool { return s.closing.Load() }

func (s *Server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.closing.Load() && len(s.conns) == 0 {
		close(s.done)
	}
}

// beginClosing sets closing; s.mu is held.
func (s *Server) beginClosing() {
	if !s.closing.Swap(true) && len(s.conns) == 0 {
		close(s.done)
	}
}

// Shutdown stops taking connections over, closes those taken over that are
// idle and waits for the others to finish the request they serve (each is
// closed after its answer), or for ctx to end, when it closes them all.
// It is http.Server.Shutdown for connections net/http no longer tracks.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.beginClosing()
	// A connection marks itself idle and then looks at closing; closing
	// was set before this looks at idle: one of the two sees the other.
	for c := range s.conns {
		if c.idle.Load() {
			c.closeNow()
		}
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes every connection taken over at once.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beginClosing()
	for c := range s.conns {
		c.closeNow()
	}
}

// conn is a connection taken over.
type conn struct {
	s          *Server
	nc         net.Conn
	remoteAddr string
	tlsState   *tls.ConnectionState
	// lr limits how much one request may read (MaxHeaderBytes).
	lr limitReader
	br *bufio.Reader
	bw *bufio.Writer
	w  response
	// idle is set while the connection waits for a request.
	idle atomic.Bool
	// now is when the last request was read.
	now time.Time
	// afterPost is set when the last request was a POST.
	afterPost bool
	closeOnce sync.Once
}

func (s *Server) newConn(nc net.Conn, hijacked *bufio.Reader) (*conn, error) {
	c := &conn{s: s, nc: nc, remoteAddr: nc.RemoteAddr().String(), now: time.Now()}
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	// net/http's reader cannot be read from after a hijack: what it has
	// buffered (a pipelined request) is copied ahead of the connection.
	if n := hijacked.Buffered(); n > 0 {
		b, err := hijacked.Peek(n)
		if err != nil {
			return nil, err
		}
		c.lr.prefix = append([]byte(nil), b...)
	}
	c.lr.r = nc
	c.lr.remain = -1
	c.br = bufio.NewReaderSize(&c.lr, 4096)
	c.bw = bufio.NewWriterSize(nc, 4096)
	c.w.c = c
	c.w.header = make(http.Header, 16)
	// The hijack cleared the deadlines net/http had set for this request.
	if d := s.cfg.WriteTimeout; d > 0 {
		_ = nc.SetWriteDeadline(c.now.Add(d))
	}
	return c, nil
}

// serve answers first, then the requests that follow it on the connection,
// one at a time, until the connection ends, a request asks for the end, or
// Shutdown.
func (c *conn) serve(ctx context.Context, first *http.Request) {
	defer c.close()
	for r := first; c.serveOne(r, false); {
		var err error
		if r, err = c.readRequest(ctx); err != nil {
			c.refuse(err)
			return
		}
	}
}

// readRequest waits for and reads the next request; nil when the
// connection is to end, and err says why (see refuse).
func (c *conn) readRequest(ctx context.Context) (*http.Request, error) {
	s := c.s
	if !c.setIdle(true) {
		return nil, errEnd
	}
	// From when the last request was read: the answer took
	// microseconds, and this saves reading the clock.
	_ = c.nc.SetReadDeadline(deadline(c.now, s.cfg.IdleTimeout))
	// The limit counts what is already buffered too (the start of this
	// request, or pipelined ones), so that no request longer than it is
	// read (net/http's does not count the buffer, which lets a request on
	// a reused connection be up to 4 KiB longer).
	c.lr.remain = max(int64(s.cfg.MaxHeaderBytes-c.br.Buffered()), 1)
	// Four bytes, as net/http waits for: fewer and the end is not a
	// request worth an answer.
	if _, err := c.br.Peek(4); !c.setIdle(false) || err != nil {
		return nil, errEnd // closed, gone or idle too long
	}
	now := time.Now()
	c.now = now
	_ = c.nc.SetReadDeadline(deadline(now, s.cfg.ReadHeaderTimeout))
	if c.afterPost {
		// Old clients end a POST body with a line break it does not
		// count; net/http skips it (RFC 7230, section 3.5).
		b, _ := c.br.Peek(4)
		_, _ = c.br.Discard(leadingLineBreaks(b))
	}
	r, err := http.ReadRequest(c.br)
	hitLimit := c.lr.remain == 0
	c.lr.remain = -1
	if err != nil {
		if hitLimit {
			return nil, errTooLarge
		}
		// The client went away, or took too long: there is nobody to
		// answer (net/http does not answer these either; it does
		// answer a request cut short).
		if commonReadError(err) {
			return nil, errEnd
		}
		return nil, err
	}
	if err := serverChecks(r); err != nil {
		return nil, err
	}
	// The header is read; the rest of the request (a body, if the
	// handler reads it, or discardBody) is read within ReadTimeout.
	_ = c.nc.SetReadDeadline(deadline(now, s.cfg.ReadTimeout))
	_ = c.nc.SetWriteDeadline(deadline(now, s.cfg.WriteTimeout))
	r.RemoteAddr = c.remoteAddr
	r.TLS = c.tlsState
	return r.WithContext(ctx), nil
}

// deadline is from+d, or none when d is 0.
func deadline(from time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return from.Add(d)
}

// commonReadError is net/http's isCommonNetReadError: the connection ended,
// timed out or failed (matched as net/http matches them, without
// unwrapping: a url.Error is a net.Error too).
func commonReadError(err error) bool {
	if err == io.EOF { //nolint:errorlint // as net/http compares
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() { //nolint:errorlint // as net/http
		return true
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "read" { //nolint:errorlint // as net/http
		return true
	}
	return false
}

// hasToken is net/http's: whether v, a comma- or space-separated list,
// holds token, case-insensitively.
func hasToken(v, token string) bool {
	for sp := 0; sp+len(token) <= len(v); sp++ {
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !isTokenBoundary(v[end]) {
			continue
		}
		if ascii.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

func leadingLineBreaks(b []byte) int {
	n := 0
	for n < len(b) && (b[n] == '\r' || b[n] == '\n') {
		n++
	}
	return n
}

// setIdle marks the connection idle or busy; false when Shutdown has begun
// (the connection is to end).
func (c *conn) setIdle(idle bool) bool {
	c.idle.Store(idle)
	return !c.s.closing.Load()
}

// errEnd ends a connection without an answer: it was closed, timed out,
// or Shutdown closed it while idle.
var errEnd = errors.New("connection ends")

// errTooLarge is a request that read more than MaxHeaderBytes.
var errTooLarge = errors.New("request header too large")

// statusError is a request refused with an answer of its own, as
// net/http's server words it.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return e.text }

var (
	errHTTPVersion    = statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	errMissingHost    = statusError{http.StatusBadRequest, "missing required Host header"}
	errMalformedHost  = statusError{http.StatusBadRequest, "malformed Host header"}
	errBadHeaderName  = statusError{http.StatusBadRequest, "invalid header name"}
	errBadHeaderValue = statusError{http.StatusBadRequest, "invalid header value"}
	errAbsoluteForm   = statusError{http.StatusBadRequest, "absolute-form request target"}
)

// serverChecks holds a request read by http.ReadRequest to what net/http's
// server requires beyond the parser (see net/http's conn.readRequest).
// ReadRequest has already refused several Host headers and taken the Host
// header out into r.Host.
func serverChecks(r *http.Request) error {
	if r.ProtoMajor != 1 {
		return errHTTPVersion
	}
	if r.ProtoMinor >= 1 && r.Host == "" && r.Method != http.MethodConnect {
		return errMissingHost
	}
	if r.URL.Host != "" {
		// http.ReadRequest takes the host of an absolute-form target
		// over the Host header, which it then drops: the header could
		// not be checked. No proxy sends one to an auth server.
		return errAbsoluteForm
	}
	if r.Host != "" && !httpguts.ValidHostHeader(r.Host) {
		return errMalformedHost
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return errBadHeaderName
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return errBadHeaderValue
			}
		}
	}
	return nil
}

// refuse answers a request that could not be read as net/http's server
// does: a short plain-text answer, and the connection is closed. Nothing is
// written for a connection that ended or timed out (errEnd).
func (c *conn) refuse(err error) {
	if errors.Is(err, errEnd) {
		return
	}
	const headers = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var answer string
	var se statusError
	switch {
	case errors.Is(err, errTooLarge):
		answer = "HTTP/1.1 431 Request Header Fields Too Large" + headers + "431 Request Header Fields Too Large"
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding"), strings.HasPrefix(err.Error(), "too many transfer encodings"):
		// The encoding is not echoed, as net/http does not.
		answer = "HTTP/1.1 501 Not Implemented" + headers + "Unsupported transfer encoding"
	case errors.As(err, &se):
		status := strconv.Itoa(se.code) + " " + http.StatusText(se.code) + ": " + se.text
		answer = "HTTP/1.1 " + status + headers + status
	default:
		answer = "HTTP/1.1 400 Bad Request" + headers + "400 Bad Request"
	}
	if d := c.s.cfg.WriteTimeout; d > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(d))
	}
	_, _ = c.bw.WriteString(answer)
	_ = c.bw.Flush()
	c.lingerClose()
}

// serveOne answers r with the handler and says whether the connection goes
// on; last closes it after the answer, with "Connection: close". What ends a
// connection is what ends it in net/http: HTTP/1.0 without keep-alive,
// "Connection: close" from either side, an expectation other than
// 100-continue (417, without asking the handler), a body expected with
// 100-continue (never asked for here) or too long to discard, Shutdown.
//
// What decides it is taken from r before the handler runs, as net/http
// does: a handler that changed r (its body, its length) cannot make a body
// be read as the next request.
func (c *conn) serveOne(r *http.Request, last bool) bool {
	w := &c.w
	method, minor := r.Method, r.ProtoMinor
	last = last || r.ProtoMajor != 1 || r.Close
	body, length, withBody := r.Body, r.ContentLength, r.ContentLength != 0 || len(r.TransferEncoding) != 0
	w.reset(method == http.MethodHead)
	expect := r.Header.Get("Expect")
	continues := hasToken(expect, "100-continue")
	switch {
	case expect != "" && !continues:
		w.WriteHeader(http.StatusExpectationFailed)
		last = true
	default:
		var hb *handlerBody
		if withBody {
			// The handler may read the body; closing it reads nothing
			// (the rest is discarded below, within limits).
			hb = &handlerBody{ReadCloser: body}
			r.Body = hb
		}
		c.s.cfg.Handler.ServeHTTP(w, r)
		// A handler that put another body in its place ends the
		// connection, as in net/http (the rest of the real body is
		// still discarded first).
		last = last || withBody && r.Body != io.ReadCloser(hb)
	}
	if !last {
		last = c.s.isClosing() || hasToken(w.header.Get("Connection"), "close") ||
			withBody && (continues && minor >= 1 || !discardBody(body, length))
	}
	if err := w.finish(minor, last); err != nil {
		c.closeNow()
		return false
	}
	if last {
		c.lingerClose()
		return false
	}
	c.afterPost = method == http.MethodPost
	return true
}

// handlerBody is a request body as a handler sees it: Close reads nothing.
type handlerBody struct{ io.ReadCloser }

func (handlerBody) Close() error { return nil }

// discardBody reads a body of the given length (-1: unknown) to its end, up
// to maxDiscard bytes, within the read deadline set when its request was
// read; false when it could not (the connection must end).
func discardBody(body io.Reader, length int64) bool {
	if length >= maxDiscard {
		return false
	}
	n, err := io.CopyN(io.Discard, body, maxDiscard+1)
	return errors.Is(err, io.EOF) && n <= maxDiscard
}

// maxDiscard is how much of an unread body is read to keep the connection
// (net/http's maxPostHandlerReadBytes).
const maxDiscard = 256 << 10

// lingerClose ends a connection whose client may still be sending (a body
// left unread): it stops writing, so that the answer is not lost to a TCP
// reset, and reads what comes for a short while before closing, as net/http
// does.
func (c *conn) lingerClose() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.nc.(closeWriter); ok {
		_ = cw.CloseWrite()
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		c.lr.remain = -1
		_, _ = io.Copy(io.Discard, io.LimitReader(c.br, lingerBytes))
	}
	c.close()
}

const (
	lingerTimeout = 500 * time.Millisecond
	lingerBytes   = 256 << 10
)

func (c *conn) close() {
	c.closeNow()
	c.s.remove(c)
}

func (c *conn) closeNow() {
	c.closeOnce.Do(func() { _ = c.nc.Close() })
}

// limitReader reads prefix, then r; while remain is not negative, at most
// remain bytes in all.
type limitReader struct {
	prefix []byte
	r      io.Reader
	remain int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.remain == 0 {
		return 0, io.EOF
	}
	if l.remain > 0 && int64(len(p)) > l.remain {
		p = p[:l.remain]
	}
	var n int
	var err error
	if len(l.prefix) > 0 {
		n = copy(p, l.prefix)
		l.prefix = l.prefix[n:]
	} else {
		n, err = l.r.Read(p)
	}
	if l.remain > 0 {
		l.remain -= int64(n)
	}
	return n, err
}

// response is the http.ResponseWriter of a connection taken over: the
// handler's header map and body are kept until the handler returns, and
// then written at once with a Content-Length.
type response struct {
	c           *conn
	header      http.Header
	status      int
	wroteHeader bool
	head        bool
	body        []byte
	keys        []string
	date        dateCache
}

func (w *response) reset(head bool) {
	clear(w.header)
	w.status, w.wroteHeader, w.head = 0, false, head
	w.body = w.body[:0]
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		// As net/http: no answer at all (the connection is closed),
		// never a 200 for a status that was never decided.
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader || code < 200 {
		// Informational answers are not sent; a second status is
		// ignored, as net/http ignores it.
		return
	}
	w.status, w.wroteHeader = code, true
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// bodyAllowed is net/http's bodyAllowedForStatus for the statuses an
// answer can have here (1xx are never sent).
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// finish writes the answer to a request of HTTP/1.minor: the status line,
// Date, Content-Length, the handler's headers (sorted, invalid names left
// out and line breaks in values made spaces, as net/http writes them) and
// the body, which a HEAD request does not get. Content-Length is always the
// body's own: a handler's is dropped, so that no answer can claim a length
// other than what is written.
func (w *response) finish(minor int, last bool) error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	bw := w.c.bw
	proto := "HTTP/1.1 "
	if minor == 0 {
		proto = "HTTP/1.0 "
	}
	_, _ = bw.WriteString(proto)
	var num [20]byte
	_, _ = bw.Write(strconv.AppendInt(num[:0], int64(w.status), 10))
	_ = bw.WriteByte(' ')
	if text := http.StatusText(w.status); text != "" {
		_, _ = bw.WriteString(text)
	} else {
		_, _ = bw.WriteString("status code " + strconv.Itoa(w.status))
	}
	if _, ok := w.header["Date"]; !ok {
		_, _ = bw.WriteString("\r\nDate: ")
		_, _ = bw.Write(w.date.get(w.c.now))
	}
	withBody := bodyAllowed(w.status)
	if withBody {
		// A HEAD answer says the length of the body it would have had,
		// when the handler wrote one.
		if !w.head || len(w.body) > 0 {
			_, _ = bw.WriteString("\r\nContent-Length: ")
			_, _ = bw.Write(strconv.AppendInt(num[:0], int64(len(w.body)), 10))
		}
		if _, ok := w.header["Content-Type"]; !ok && len(w.body) > 0 {
			_, _ = bw.WriteString("\r\nContent-Type: " + http.DetectContentType(w.body))
		}
	}
	switch {
	case last:
		_, _ = bw.WriteString("\r\nConnection: close")
	case minor == 0:
		_, _ = bw.WriteString("\r\nConnection: keep-alive")
	}
	w.keys = w.keys[:0]
	for k := range w.header {
		switch k {
		case "Connection", "Transfer-Encoding", "Content-Length":
			continue
		case "Content-Type":
			if w.status == http.StatusNotModified {
				continue
			}
		}
		w.keys = append(w.keys, k)
	}
	slices.Sort(w.keys)
	for _, k := range w.keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range w.header[k] {
			_, _ = bw.WriteString("\r\n")
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			writeValue(bw, v)
		}
	}
	_, _ = bw.WriteString("\r\n\r\n")
	if !w.head && withBody {
		_, _ = bw.Write(w.body)
	}
	if cap(w.body) > maxKeptBody {
		w.body = nil
	}
	return bw.Flush()
}

// maxKeptBody is the largest body buffer a connection keeps between
// answers.
const maxKeptBody = 64 << 10

// writeValue writes a header value as net/http does: CR and LF become
// spaces, and leading and trailing space and tab are left out.
func writeValue(bw *bufio.Writer, v string) {
	v = strings.Trim(v, " \t")
	for {
		i := strings.IndexAny(v, "\r\n")
		if i < 0 {
			_, _ = bw.WriteString(v)
			return
		}
		_, _ = bw.WriteString(v[:i])
		_ = bw.WriteByte(' ')
		v = v[i+1:]
	}
}

// dateCache formats the Date header once a second.
type dateCache struct {
	unix int64
	buf  []byte
}

func (d *dateCache) get(now time.Time) []byte {
	if u := now.Unix(); u != d.unix || d.buf == nil {
		d.unix = u
		d.buf = now.UTC().AppendFormat(d.buf[:0], http.TimeFormat)
	}
	return d.buf
}
