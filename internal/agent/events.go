package agent

import (
	"context"
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// eventsLoop relays the engine's container events for the agent's whole
// life (SPEC 2.3). Events go out only while connected: they describe the
// present, and the inventory after each identify covers what was missed.
func (a *Agent) eventsLoop(ctx context.Context) {
	b := backoff.New(a.tm.eventsRetry, 30*time.Second)
	fail := newEvery(time.Minute)
	for {
		start := time.Now()
		err := a.opts.Runtime.Events(ctx, a.sendEvent)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			b.Reset()
		}
		if ok, n := fail.allow(); ok {
			a.log.Warn("container event stream ended; resubscribing", "err", err, "suppressedLogs", n)
		}
		if !backoff.Sleep(ctx, b.Next()) {
			return
		}
	}
}

// sendEvent forwards one event to the connected server, if any, after its
// inventory. It blocks while the server reads slowly, which slows the
// engine's event reader.
func (a *Agent) sendEvent(ev protocol.ContainerEvent) {
	s := a.current()
	if s == nil {
		a.log.Debug("container event not sent: disconnected", "containerId", ev.ContainerID, "event", ev.Action)
		return
	}
	if !s.waitOpen(s.ctx) {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, a.tm.writeTimeout)
	defer cancel()
	if err := s.send(ctx, ev); err != nil {
		a.log.Debug("container event not sent", "containerId", ev.ContainerID, "event", ev.Action, "err", err)
	}
}
