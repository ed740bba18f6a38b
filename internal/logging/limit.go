package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter lets a repeating log line through at most once per interval and
// counts the occurrences it held back, so a loop failing every second (a
// refused dial, an unreachable Docker daemon) logs once a minute with a
// count instead of flooding the log. Safe for concurrent use.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	next       time.Time // zero: the next line passes
	suppressed int
}

// Every returns a Limiter that lets one line through per d.
func Every(d time.Duration) *Limiter {
	return &Limiter{every: d, now: time.Now}
}

// Allow reports whether a line may be logged now and, if so, how many
// were held back since the previous one.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	l.next = now.Add(l.every)
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// Log logs through logger when Allow permits, adding a "suppressed" count
// when lines were held back.
func (l *Limiter) Log(ctx context.Context, logger *slog.Logger, level slog.Level, msg string, args ...any) {
	if !logger.Enabled(ctx, level) {
		return
	}
	ok, n := l.Allow()
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, slog.Int("suppressed", n))
	}
	logger.Log(ctx, level, msg, args...)
}

// Reset lets the next line through at once, e.g. after the failing
// operation succeeded, so a new failure is reported immediately.
func (l *Limiter) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next = time.Time{}
	l.suppressed = 0
}
