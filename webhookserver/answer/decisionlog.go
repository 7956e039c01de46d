package answer

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/ascii"
	"github.com/meterr/meterr-operator/webhookserver/authz"
	"github.com/meterr/meterr-operator/webhookserver/request"
)

// --log-decisions values.
const (
	LogDecisionsOff    = "off"
	LogDecisionsDenied = "denied"
	LogDecisionsAll    = "all"
)

// The decision log writes at most DecisionLogRate lines a second, with bursts
// of DecisionLogBurst; the rest are counted in
// meterr_auth_decision_logs_dropped_total, and the next line written says how
// many were dropped before it. A flood of requests cannot fill a disk.
const (
	DecisionLogRate  = 100
	DecisionLogBurst = 200
	// maxLoggedValue caps each client-supplied value in a line.
	maxLoggedValue = 256
)

// ValidateLogDecisions checks a --log-decisions value.
func ValidateLogDecisions(mode string) error {
	switch mode {
	case "", LogDecisionsOff, LogDecisionsDenied, LogDecisionsAll:
		return nil
	}
	return fmt.Errorf("%q is not off, denied or all", mode)
}

// decisionLog explains decisions, one structured line each, never with the
// key or the Authorization header. A Core has one only when the log is on:
// off, the hot path pays one nil check.
type decisionLog struct {
	log     logr.Logger
	all     bool
	dropped prometheus.Counter

	// limit is the token bucket (golang.org/x/time/rate), spent at the
	// times the Core's clock gives, so tests drive it.
	limit *rate.Limiter
	// droppedSince counts the lines dropped since the last one written.
	droppedSince atomic.Uint64
}

func newDecisionLog(mode string, log logr.Logger, dropped prometheus.Counter) *decisionLog {
	if mode == "" || mode == LogDecisionsOff {
		return nil
	}
	return &decisionLog{log: log, all: mode == LogDecisionsAll, dropped: dropped,
		limit: rate.NewLimiter(DecisionLogRate, DecisionLogBurst)}
}

// take spends a token of the bucket. ok is false when the line must be
// dropped; otherwise droppedBefore is how many were dropped since the last
// line written.
func (d *decisionLog) take(now time.Time) (droppedBefore uint64, ok bool) {
	if !d.limit.AllowN(now, 1) {
		d.droppedSince.Add(1)
		return 0, false
	}
	return d.droppedSince.Swap(0), true
}

// LogsDecisions says whether decisions are logged: a front-end works out
// what only the log shows (the original method and path) only then.
func (s *Core) LogsDecisions() bool { return s.dlog != nil }

// admitDecisionLine says whether a decision of code c gets a line: by the
// mode, then by the rate (a dropped line is counted). The front-ends ask it
// before working out the line, so a flood over the rate costs no more than
// that.
func (s *Core) admitDecisionLine(c authz.Code) (droppedBefore uint64, ok bool) {
	d := s.dlog
	if c == authz.OK && !d.all {
		return 0, false
	}
	if droppedBefore, ok = d.take(s.clock.Now()); !ok {
		d.dropped.Inc()
	}
	return droppedBefore, ok
}

// logDecision writes the line of the answer a to req, if the mode and the
// rate allow, the same for every front-end; never the key. in is what the
// decision read, looked whether it looked the key up; what the decision did
// not need (the key's record for a request refused before the lookup, the
// client address and origin of a key without restrictions) is worked out
// here, so that with the log off the decision does no extra work.
func (s *Core) logDecision(req *request.Request, a *Answer, in *authz.Input, looked bool) {
	droppedBefore, ok := s.admitDecisionLine(a.Code)
	if !ok {
		return
	}
	kv := make([]any, 0, 26)
	kv = append(kv, "code", a.Code.String())
	// The key's id and owner, also for a disabled or expired key; the key
	// itself is never logged.
	e, found := in.Entry, in.Found
	if !looked {
		if tok, ok := req.Token(); ok && apikey.Parse(tok) == nil {
			e, found = s.index.Lookup(apikey.HashOf(tok))
		}
	}
	if found {
		// Copies: the index's strings must not outlive the request, and a
		// log sink may keep what it is given.
		kv = append(kv, "keyId", strings.Clone(e.KeyID), "owner", strings.Clone(e.Policy.Owner()))
	}
	client, peer := "unknown", "unknown"
	if c := s.trust.Client(req); c.IsValid() {
		client = c.String()
	}
	if p := req.PeerText(); p != "" {
		peer = p
	}
	kv = append(kv, "client", client, "peer", peer)
	if req.Claimed.IsValid() {
		kv = append(kv, "source", req.Claimed.String())
	}
	if xff := req.Headers.Joined("X-Forwarded-For", "x-forwarded-for"); xff != "" {
		kv = append(kv, "xForwardedFor", loggable(xff))
	}
	if host := req.Headers.OriginHost(); host != "" {
		kv = append(kv, "originHost", host)
	}
	required := "none"
	if req.Required != 0 {
		required = req.Required.String()
	}
	kv = append(kv, "endpoint", req.Endpoint.String(), "method", loggable(req.Method), "path", loggable(req.Path), "required", required)
	if droppedBefore > 0 {
		kv = append(kv, "droppedBefore", droppedBefore)
	}
	s.dlog.log.Info("decision", kv...)
}

// loggable shortens a client-supplied value to maxLoggedValue bytes and
// hides anything that looks like a key ("mtr_", in any case, and the
// characters of a key after it). A client may put its key anywhere, and may
// percent-encode any of its characters any number of times
// (/v1/keys/%256dtr_live_… is the key to a chain of servers that each decode
// once), so the value is read with its escapes decoded until none is left,
// and what stands for a key is replaced in the value as sent: the rest is
// logged as the client sent it.
func loggable(s string) string {
	if len(s) > maxLoggedValue {
		s = s[:maxLoggedValue] + "…"
	}
	if strings.IndexByte(s, '%') < 0 && !containsFoldMtr(s) {
		return s
	}
	dec, from, to := decodeAll(s)
	var b strings.Builder
	last := 0
	for i := 0; i+len("mtr_") <= len(dec); i++ {
		if !ascii.EqualFold(string(dec[i:i+len("mtr_")]), "mtr_") {
			continue
		}
		end := i + len("mtr_")
		for end < len(dec) && isKeyChar(dec[end]) {
			end++
		}
		b.WriteString(s[last:from[i]])
		b.WriteString("mtr_[redacted]")
		last = to[end-1]
		i = end - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// containsFoldMtr says whether s holds "mtr_" in any case.
func containsFoldMtr(s string) bool {
	for i := 0; i+len("mtr_") <= len(s); i++ {
		if s[i]|0x20 == 'm' && ascii.EqualFold(s[i:i+len("mtr_")], "mtr_") {
			return true
		}
	}
	return false
}

// decodeAll decodes the percent escapes of s, then those of the result, until
// none is left (invalid escapes stay as they are), and returns for each byte
// of the result the range of s, [from[i], to[i]), it stands for. Each pass
// that decodes anything is shorter, so there are at most len(s)/2 passes.
func decodeAll(s string) (dec []byte, from, to []int) {
	dec = []byte(s)
	from, to = make([]int, len(s)), make([]int, len(s))
	for i := range from {
		from[i], to[i] = i, i+1
	}
	for {
		n, changed := 0, false
		for i := 0; i < len(dec); i++ {
			c, f, t := dec[i], from[i], to[i]
			if c == '%' && i+2 < len(dec) {
				if hi, ok := unhex(dec[i+1]); ok {
					if lo, ok := unhex(dec[i+2]); ok {
						c, t, changed = hi<<4|lo, to[i+2], true
						i += 2
					}
				}
			}
			// n <= i: written behind what is read.
			dec[n], from[n], to[n] = c, f, t
			n++
		}
		dec, from, to = dec[:n], from[:n], to[:n]
		if !changed {
			return dec, from, to
		}
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isKeyChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}
