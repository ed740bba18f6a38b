package server

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Limits of the failure limiter's memory and the cadence of its summaries.
const (
	limiterMaxEntries = 10000            // client addresses tracked at most (LRU beyond)
	limiterIdleAfter  = 10 * time.Minute // an address quiet this long is forgotten
	limiterWindow     = time.Minute      // one summary line per address per window
	limiterSweepEvery = 10 * time.Second
)

// failureLimiter rate-limits failed authentications (bad enrollment or node
// tokens, refused enrollments) per client address with a token bucket: a
// burst, then one failure per interval. An address whose bucket is empty is
// answered 429 with Retry-After before any work is done. Successful
// requests cost nothing, so a working agent is never limited by its own
// successes.
//
// It also keeps the log bounded: the first failure of an address in a
// window is logged in full by the caller; the rest, and every 429, are
// counted and summarised in one line per address per window. Memory is
// bounded: at most limiterMaxEntries addresses (least recently seen evicted
// first, after its summary), idle ones dropped.
type failureLimiter struct {
	burst    float64
	interval time.Duration
	max      int
	now      func() time.Time
	log      *slog.Logger // the audit logger

	mu      sync.Mutex
	entries map[string]*list.Element // of *addrEntry
	lru     *list.List               // front: most recently seen

	stop chan struct{}
	done chan struct{}
}

type addrEntry struct {
	key         string
	tokens      float64
	refilled    time.Time
	lastSeen    time.Time
	windowStart time.Time      // zero: no window open, the next failure is logged in full
	held        map[string]int // failures counted, not logged, in this window, by reason
	limited     int            // requests answered 429 in this window
}

func newFailureLimiter(burst int, interval time.Duration, now func() time.Time, log *slog.Logger) *failureLimiter {
	return &failureLimiter{
		burst: float64(burst), interval: interval, max: limiterMaxEntries, now: now, log: log,
		entries: map[string]*list.Element{}, lru: list.New(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// run sweeps every limiterSweepEvery until close.
func (l *failureLimiter) run() {
	defer close(l.done)
	t := time.NewTicker(limiterSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.sweep(false)
		case <-l.stop:
			l.sweep(true)
			return
		}
	}
}

// close stops run, which logs the summaries still pending, and waits for it.
func (l *failureLimiter) close(ctx context.Context) error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refill adds the tokens earned since the last refill.
func (l *failureLimiter) refill(e *addrEntry, now time.Time) {
	if d := now.Sub(e.refilled); d > 0 {
		e.tokens = math.Min(l.burst, e.tokens+float64(d)/float64(l.interval))
		e.refilled = now
	}
}

// allow reports whether a request from addr may be processed. When not, it
// counts the 429 for the address's summary and returns how long until the
// next failure is allowed (for Retry-After); logNow is true when no window
// was open (the caller logs this refusal in full).
func (l *failureLimiter) allow(addr string) (ok bool, retryAfter time.Duration, logNow bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.entries[addr]
	if el == nil {
		return true, 0, false
	}
	e := el.Value.(*addrEntry)
	now := l.now()
	l.refill(e, now)
	if e.tokens >= 1 {
		return true, 0, false
	}
	e.lastSeen = now
	l.lru.MoveToFront(el)
	retryAfter = time.Duration((1 - e.tokens) * float64(l.interval))
	if e.windowStart.IsZero() {
		e.windowStart = now
		return false, retryAfter, true
	}
	e.limited++
	return false, retryAfter, false
}

// fail records a failed authentication from addr (taking a token from its
// bucket) for reason, a short code. logNow is true when it is the first
// failure of a window: the caller logs it in full; the others are held back
// and summarised.
func (l *failureLimiter) fail(addr, reason string) (logNow bool) {
	l.mu.Lock()
	now := l.now()
	var evicted *addrEntry
	el := l.entries[addr]
	if el == nil {
		if l.lru.Len() >= l.max {
			oldest := l.lru.Back()
			evicted = oldest.Value.(*addrEntry)
			l.lru.Remove(oldest)
			delete(l.entries, evicted.key)
		}
		el = l.lru.PushFront(&addrEntry{key: addr, tokens: l.burst, refilled: now})
		l.entries[addr] = el
	}
	e := el.Value.(*addrEntry)
	l.refill(e, now)
	e.tokens = math.Max(0, e.tokens-1)
	e.lastSeen = now
	l.lru.MoveToFront(el)
	if e.windowStart.IsZero() {
		e.windowStart = now
		logNow = true
	} else {
		if e.held == nil {
			e.held = map[string]int{}
		}
		e.held[reason]++
	}
	l.mu.Unlock()
	if evicted != nil {
		l.summarise(evicted, now)
	}
	return logNow
}

// sweep logs the summaries of windows that ended (all of them when final),
// closes quiet windows and forgets idle addresses whose bucket is full.
func (l *failureLimiter) sweep(final bool) {
	l.mu.Lock()
	now := l.now()
	var due []addrEntry
	for el := l.lru.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*addrEntry)
		if !e.windowStart.IsZero() && (final || now.Sub(e.windowStart) >= limiterWindow) {
			if e.pending() > 0 {
				due = append(due, *e)
				e.held, e.limited = nil, 0
				e.windowStart = now
			} else {
				e.windowStart = time.Time{}
			}
		}
		l.refill(e, now)
		if e.windowStart.IsZero() && e.tokens >= l.burst && now.Sub(e.lastSeen) >= limiterIdleAfter {
			l.lru.Remove(el)
			delete(l.entries, e.key)
		}
		el = next
	}
	l.mu.Unlock()
	for i := range due {
		l.summarise(&due[i], now)
	}
}

func (e *addrEntry) pending() int {
	n := e.limited
	for _, c := range e.held {
		n += c
	}
	return n
}

// summarise logs the failures held back for one address.
func (l *failureLimiter) summarise(e *addrEntry, now time.Time) {
	n := e.pending()
	if n == 0 {
		return
	}
	reasons := make([]string, 0, len(e.held))
	for r, c := range e.held {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, c))
	}
	slices.Sort(reasons)
	l.log.Warn("authentication failures from client address (summary)", "remote", e.key, "failures", n,
		"rateLimited", e.limited, "reasons", strings.Join(reasons, " "),
		"since", e.windowStart.UTC().Format(time.RFC3339), "until", now.UTC().Format(time.RFC3339))
}

// size is the number of addresses tracked (tests).
func (l *failureLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// clientAddr is the rate limiter's key for a request: the address of the
// TCP peer (r.RemoteAddr, never X-Forwarded-For, which any client can set),
// without the port; IPv6 addresses are grouped by their /64, which one
// client usually holds whole.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, err := ip.WithZone("").Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// retryAfterSeconds is Retry-After for d: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return fmt.Sprint(max(1, int64(math.Ceil(d.Seconds()))))
}

// quietKey marks a request whose outcome the audit log covers: the request
// log line goes to debug, so a flood of refused tokens cannot flood the log
// through it.
type quietKey struct{}

// quietRequestLog asks the middleware to log r at debug level.
func quietRequestLog(r *http.Request) {
	if q, ok := r.Context().Value(quietKey{}).(*bool); ok {
		*q = true
	}
}
