// Package backoff is the one retry primitive of the agent: exponential
// growth from a base delay doubling up to a cap, with full jitter, reset once
// a connection has proved stable by staying up long enough, and Wait, which
// waits the next delay unless the context ends first. Retry and poll loops
// call Wait instead of writing their own timer.
//
// The clock that Wait waits on and the random source are injectable, and
// callers pass the times at which a connection came up and went down, so
// tests are deterministic and run in microseconds.
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
	clock       Clock

	attempt int
	upSince time.Time
}

// Option configures a Backoff.
type Option func(*Backoff)

// WithRand replaces the random source. f(n) must return a value in [0, n).
func WithRand(f func(n int64) int64) Option { return func(b *Backoff) { b.randN = f } }

// WithStableAfter sets how long a connection must stay up before
// MarkDisconnected resets the backoff.
func WithStableAfter(d time.Duration) Option { return func(b *Backoff) { b.stableAfter = d } }

// WithoutJitter makes every delay the ceiling itself: a plain doubling
// (or, with Constant, a fixed poll interval).
func WithoutJitter() Option { return WithRand(func(n int64) int64 { return n - 1 }) }

// WithClock replaces the clock Wait and WaitFor wait on; nil keeps the
// real one.
func WithClock(c Clock) Option {
	return func(b *Backoff) {
		if c != nil {
			b.clock = c
		}
	}
}

// Clock is what a Backoff waits on, and what a retry loop reads the times
// it passes to MarkConnected and MarkDisconnected from: RealClock by
// default, a fake one in tests (or RealClock inside a testing/synctest
// bubble, where time is fake).
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the process's clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// After is time.After: its unstopped timer is collected once unreferenced
// (Go 1.23), so a Wait cut short leaks nothing.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

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
	b := &Backoff{base: base, max: max, stableAfter: DefaultStableAfter, randN: rand.Int64N, clock: RealClock{}}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Constant returns a Backoff whose every delay is d (a poll interval): New
// with base and cap d and no jitter.
func Constant(d time.Duration, opts ...Option) *Backoff {
	return New(d, d, append([]Option{WithoutJitter()}, opts...)...)
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

// Wait waits the next delay (Next) on the Backoff's clock, or until ctx
// ends; then it returns ctx's error. It is the wait of every retry loop.
func (b *Backoff) Wait(ctx context.Context) error { return b.WaitFor(ctx, b.Next()) }

// WaitFor waits d, a delay Next returned, on the Backoff's clock, or until
// ctx ends; then it returns ctx's error. A loop that tells how long it waits
// before it waits calls Next, logs, then WaitFor.
func (b *Backoff) WaitFor(ctx context.Context, d time.Duration) error {
	return wait(ctx, b.clock, d)
}

func wait(ctx context.Context, c Clock, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
