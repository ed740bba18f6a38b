package agenttest

import (
	"context"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Exec implements agent.Runtime; the default exits 0 with no output.
func (r *Runtime) Exec(ctx context.Context, p protocol.ExecParams) (protocol.ExecResult, error) {
	r.record("Exec", p.ContainerID)
	if r.ExecFunc != nil {
		return r.ExecFunc(ctx, p)
	}
	return protocol.ExecResult{}, nil
}

// ExecSession implements agent.Runtime; the default waits for ctx and
// reports a detach.
func (r *Runtime) ExecSession(ctx context.Context, p protocol.ExecParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, error) {
	r.record("ExecSession", p.ContainerID)
	if r.ExecSessionFunc != nil {
		return r.ExecSessionFunc(ctx, p, in, out)
	}
	<-ctx.Done()
	return protocol.SessionResult{Detached: true}, nil
}

// Attach implements agent.Runtime; the default waits for ctx and reports a
// detach.
func (r *Runtime) Attach(ctx context.Context, p protocol.AttachParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, []string, error) {
	r.record("Attach", p.ContainerID)
	if r.AttachFunc != nil {
		return r.AttachFunc(ctx, p, in, out)
	}
	<-ctx.Done()
	return protocol.SessionResult{Detached: true}, nil, nil
}

// FollowStats implements agent.Runtime; the default sends nothing and waits
// for ctx.
func (r *Runtime) FollowStats(ctx context.Context, p protocol.StatsParams, emit func(protocol.StatsSample) error) (int, error) {
	r.record("FollowStats", p.ContainerID)
	if r.FollowStatsFunc != nil {
		return r.FollowStatsFunc(ctx, p, emit)
	}
	<-ctx.Done()
	return 0, nil
}
