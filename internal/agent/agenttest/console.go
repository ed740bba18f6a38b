package agenttest

import (
	"context"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Exec implements agent.Runtime; the default exits 0 with no output.
func (r *Runtime) Exec(ctx context.Context, cmd *protocol.Command) (protocol.ExecResult, error) {
	r.record("Exec", cmd.ContainerID, cmd)
	if r.ExecFunc != nil {
		return r.ExecFunc(ctx, cmd)
	}
	return protocol.ExecResult{}, nil
}

// ExecSession implements agent.Runtime; the default waits for ctx and
// reports a detach.
func (r *Runtime) ExecSession(ctx context.Context, cmd *protocol.Command, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, error) {
	r.record("ExecSession", cmd.ContainerID, cmd)
	if r.ExecSessionFunc != nil {
		return r.ExecSessionFunc(ctx, cmd, in, out)
	}
	<-ctx.Done()
	return protocol.SessionResult{Detached: true}, nil
}

// Attach implements agent.Runtime; the default waits for ctx and reports a
// detach.
func (r *Runtime) Attach(ctx context.Context, cmd *protocol.Command, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, []string, error) {
	r.record("Attach", cmd.ContainerID, cmd)
	if r.AttachFunc != nil {
		return r.AttachFunc(ctx, cmd, in, out)
	}
	<-ctx.Done()
	return protocol.SessionResult{Detached: true}, nil, nil
}

// FollowStats implements agent.Runtime; the default sends nothing and waits
// for ctx.
func (r *Runtime) FollowStats(ctx context.Context, cmd *protocol.Command, emit func(protocol.StatsSample) error) (int, error) {
	r.record("FollowStats", cmd.ContainerID, cmd)
	if r.FollowStatsFunc != nil {
		return r.FollowStatsFunc(ctx, cmd, emit)
	}
	<-ctx.Done()
	return 0, nil
}
