package agent

import (
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/transport"
)

// Timing shortens the agent's internal intervals in tests. Zero fields keep
// their defaults. Set it before Run.
type Timing struct {
	PingInterval time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	StableAfter  time.Duration
	FlushTimeout time.Duration
	Proxy        transport.ProxyFunc
	// Clock is what reconnect waits wait on, and what tells how long a
	// connection stayed up (the stable period).
	Clock backoff.Clock
}

// SetTiming applies t to a.
func SetTiming(a *Agent, t Timing) {
	set := func(d *time.Duration, v time.Duration) {
		if v > 0 {
			*d = v
		}
	}
	set(&a.tm.pingInterval, t.PingInterval)
	set(&a.tm.readTimeout, t.ReadTimeout)
	set(&a.tm.writeTimeout, t.WriteTimeout)
	set(&a.tm.stableAfter, t.StableAfter)
	set(&a.tm.flushTimeout, t.FlushTimeout)
	if t.Proxy != nil {
		a.tm.proxy = t.Proxy
	}
	if t.Clock != nil {
		a.tm.clock = t.Clock
	}
}

// OutboxLen is the number of results waiting to be written.
func OutboxLen(a *Agent) int { return a.outbox.len() }

// PendingUsage is the memory and number of commands held by commands
// accepted and not finished: in total (key "") or for one container.
func PendingUsage(a *Agent, key string) (bytes int64, commands int) { return a.pending.usage(key) }

// ResetRefreshLog lets the next ignored token_refresh be logged at once.
func ResetRefreshLog(a *Agent) {
	a.refreshLog.Reset()
}

// OutboxUnwritten is the number of results not yet written on the current
// connection (OutboxLen also counts those written and not confirmed).
func OutboxUnwritten(a *Agent) int { return a.outbox.unwritten() }
