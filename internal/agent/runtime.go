package agent

import (
	"context"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Runtime is what the agent needs from the container engine. internal/docker
// implements it against the Docker Engine API; tests use agenttest.Runtime.
// The agent validates each command once, when it arrives, and passes each
// method only its operation's arguments (protocol.CreateParams and the
// like). Every method enforces node-local policy itself (managed-only,
// volume roots): nothing from the wire can switch it off.
//
// Errors carry a protocol code (protocol.Errorf / protocol.CodeOf).
type Runtime interface {
	// Info describes the engine for agent_identify; an error means the
	// engine is unreachable (readiness fails).
	Info(ctx context.Context) (protocol.EngineInfo, error)
	// Create pulls (per pullPolicy) and creates the container. progress may
	// be called with pull stages.
	Create(ctx context.Context, p protocol.CreateParams, progress ProgressFunc) (res protocol.CreateResult, warnings []string, err error)
	Start(ctx context.Context, containerID string) error
	// Stop and Restart use timeout (seconds) as the grace period when non-nil.
	Stop(ctx context.Context, containerID string, timeout *int) error
	Restart(ctx context.Context, containerID string, timeout *int) error
	Kill(ctx context.Context, containerID, signal string) error
	// Delete removes the container (force); a missing managed container is
	// not an error: alreadyAbsent reports it.
	Delete(ctx context.Context, containerID string) (alreadyAbsent bool, err error)
	// Logs returns the last p.Lines lines (p.Since, p.Timestamps).
	Logs(ctx context.Context, p protocol.LogsParams) ([]string, error)
	// FollowLogs streams lines to emit until the container stops or ctx
	// ends, resuming after the last line delivered when the engine ends its
	// stream early. emit does not block (the agent buffers, bounded, and
	// drops the oldest lines when the server is slow); its error ends the
	// stream.
	FollowLogs(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error
	Inspect(ctx context.Context, containerID string) (protocol.InspectResult, error)
	// List returns every container this agent manages.
	List(ctx context.Context) ([]protocol.InventoryItem, error)
	Stats(ctx context.Context, containerID string) (protocol.StatsResult, error)
	// Update changes the limits set (non-zero) in l.
	Update(ctx context.Context, containerID string, l protocol.Limits) (warnings []string, err error)
	// Exec runs an exec without stdin to completion (docs/protocol.md).
	Exec(ctx context.Context, p protocol.ExecParams) (protocol.ExecResult, error)
	// ExecSession runs an interactive exec: input from in (protocol.Stdin,
	// protocol.Resize, in order), output to out, until the process exits
	// or ctx ends (Detached).
	ExecSession(ctx context.Context, p protocol.ExecParams, in <-chan protocol.Message, out OutputFunc) (protocol.SessionResult, error)
	// Attach attaches to a container's main process like ExecSession,
	// first replaying p.Lines lines of its log; it ends when the
	// container stops or ctx ends.
	Attach(ctx context.Context, p protocol.AttachParams, in <-chan protocol.Message, out OutputFunc) (protocol.SessionResult, []string, error)
	// FollowStats hands a sample to emit every p.Interval until the
	// container stops or ctx ends; it returns the samples sent. The agent
	// fills in the samples' command id.
	FollowStats(ctx context.Context, p protocol.StatsParams, emit func(protocol.StatsSample) error) (int, error)
	// Events calls emit for each event of a managed container until ctx ends,
	// resubscribing (with Since) when the engine restarts.
	Events(ctx context.Context, emit func(protocol.ContainerEvent)) error
}

// ProgressFunc reports a stage of long work (command_progress). It is an
// alias, not a defined type, so internal/docker can implement Runtime with a
// plain func parameter without importing this package.
type ProgressFunc = func(stage, detail string)

// HostSampler reads host resource usage for heartbeats.
type HostSampler interface {
	Sample(ctx context.Context) (protocol.HostResources, error)
}

// Observer receives the agent's operational signals (Prometheus metrics in
// internal/health). Methods must not block.
type Observer interface {
	Connected(up bool)
	Reconnect()
	CommandDone(action protocol.Action, status protocol.Status, took time.Duration)
	OutboxDepth(n int)
	LogLinesStreamed(n int)
	RuntimeError(action protocol.Action)
}
