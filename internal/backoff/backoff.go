// Package backoff computes reconnect delays: exponential growth from a base
// delay doubling up to a cap, with full jitter, reset once a connection has
// proved stable by staying up long enough.
//
// Backoff has no clock of its own: callers pass the times at which a
// connection came up and went down, and the random source and the sleep of
// Wait are injectable, so tests are deterministic and run in microseconds.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// DefaultStableAfter is how long a connection must stay up before the
// backoff resets (docs/protocol.md: a server that accepts and at once closes must not
// cause a tight reconnect loop).
const DefaultStableAfter = 10 * time.Second

// Backoff yields delays for successive reconnect attempts. It is not safe
// for concurrent use; one reconnect loop owns it.
type Backoff struct {
	base, max   time.Duration
	stableAfter time.Duration
	randN       func(n int64) int64
	sleep       func(ctx context.Context, d time.Duration) bool

	attempt int
	upSince time.Time
}

// Option configures a Backoff.
type Option func(*Backoff)

// WithRand replaces the random source. f(n) must return a value in [0, n).
func WithRand(f func(n int64) int64) Option { return func(b *Backoff) { b.randN = f } }

// WithSleep replaces the wait of Wait (Sleep: the real clock). f waits d
// or until ctx ends and reports whether the full time passed; tests pass
// one that records d and returns at once.
func WithSleep(f func(ctx context.Context, d time.Duration) bool) Option {
	return func(b *Backoff) { b.sleep = f }
}

// WithStableAfter sets how long a connection must stay up before
// MarkDisconnected resets the backoff.
func WithStableAfter(d time.Duration) Option { return func(b *Backoff) { b.stableAfter = d } }

// New returns a Backoff whose ceiling starts at base and doubles per attempt
// up to max. A non-positive base becomes one second; a max below base
// becomes base.
func New(base, max time.Duration, opts ...Option) *Backoff {
	if base <= 0 {
		base = time.Second
	}
	if max < base {
		max = base
	}
	b := &Backoff{base: base, max: max, stableAfter: DefaultStableAfter, randN: rand.Int64N, sleep: Sleep}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Ceiling is the largest delay the next call to Next can return:
// min(max, base * 2^attempt).
func (b *Backoff) Ceiling() time.Duration {
	d := b.base
	for i := 0; i < b.attempt; i++ {
		if d >= b.max/2 {
			return b.max
		}
		d *= 2
	}
	return min(d, b.max)
}

// Next returns the delay before the next attempt, uniformly drawn from
// [0, Ceiling()] ("full jitter"), and counts the attempt.
func (b *Backoff) Next() time.Duration {
	ceil := b.Ceiling()
	b.attempt++
	return time.Duration(b.randN(int64(ceil) + 1))
}

// Wait waits the next delay (Next) or until ctx ends, and reports whether
// the full delay passed: the wait of a retry loop.
func (b *Backoff) Wait(ctx context.Context) bool {
	return b.sleep(ctx, b.Next())
}

// Attempt is the number of delays handed out since the last reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts over from the base delay.
func (b *Backoff) Reset() {
	b.attempt = 0
	b.upSince = time.Time{}
}

// MarkConnected records that a connection came up at now.
func (b *Backoff) MarkConnected(now time.Time) { b.upSince = now }

// MarkDisconnected records that the connection went down at now. When it had
// stayed up for at least the stable period the backoff resets and
// MarkDisconnected reports true; a connection that dropped sooner keeps the
// attempt count, so the delays keep growing.
func (b *Backoff) MarkDisconnected(now time.Time) bool {
	up := b.upSince
	b.upSince = time.Time{}
	if up.IsZero() || now.Sub(up) < b.stableAfter {
		return false
	}
	b.Reset()
	return true
}

// Sleep waits d or until ctx ends, and reports whether the full time
// passed: the one wait of every retry loop (reconnects, resubscriptions,
// log stream resumes).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
