package agent

import (
	"context"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// beat sends one heartbeat (docs/protocol.md): host resources from the sampler plus
// the managed container counts. If sampling fails the beat is skipped; if
// only the engine fails, the beat goes out without container counts.
func (a *Agent) beat(s *session) {
	ctx, cancel := context.WithTimeout(s.ctx, callTimeout)
	defer cancel()
	var res protocol.HostResources
	if a.opts.Host != nil {
		var err error
		res, err = a.opts.Host.Sample(ctx)
		if err != nil {
			if ok, n := a.sampleLog.Allow(); ok {
				a.log.Warn("host metrics unavailable: heartbeat skipped", "err", err, "suppressedLogs", n)
			}
			return
		}
	}
	// A hung engine must not hold the beat: it goes out without counts
	// after half an interval at most.
	lctx, lcancel := context.WithTimeout(ctx, min(callTimeout, a.opts.HeartbeatInterval/2))
	items, err := a.opts.Runtime.List(lctx)
	lcancel()
	a.setRuntimeErr(err)
	if err != nil {
		if ok, n := a.listLog.Allow(); ok {
			a.log.Warn("container engine unreachable: heartbeat without container counts", "err", err, "suppressedLogs", n)
		}
	} else {
		counts := &protocol.ContainerCounts{Total: len(items)}
		for _, it := range items {
			if it.State == "running" {
				counts.Running++
			}
		}
		res.Containers = counts
	}
	hb := protocol.Heartbeat{NodeID: a.currentNodeID(), Resources: res, Timestamp: protocol.Timestamp(time.Now())}
	if err := s.send(ctx, hb); err != nil {
		a.log.Debug("heartbeat not sent", "err", err)
	}
}
