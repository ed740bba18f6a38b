// Package agenttest holds test doubles for the agent: Runtime, a fake
// container engine made of funcs, and Server, an in-process Lormas server
// speaking the node WebSocket protocol (gws inside httptest), plus CA, a
// throwaway PKI for wss and mTLS tests. The end-to-end tests of the built
// binary use the same Server.
package agenttest

import (
	"context"
	"sync"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Runtime implements agent.Runtime with one func per method. A nil func
// gives a sensible default: success with a plausible value, an empty list,
// a stream that ends at once, an event stream that waits for ctx. Every call
// is recorded (Calls).
type Runtime struct {
	InfoFunc       func(ctx context.Context) (protocol.EngineInfo, error)
	CreateFunc     func(ctx context.Context, p protocol.CreateParams, progress agent.ProgressFunc) (protocol.CreateResult, []string, error)
	StartFunc      func(ctx context.Context, containerID string) error
	StopFunc       func(ctx context.Context, containerID string, timeout *int) error
	RestartFunc    func(ctx context.Context, containerID string, timeout *int) error
	KillFunc       func(ctx context.Context, containerID, signal string) error
	DeleteFunc     func(ctx context.Context, containerID string) (bool, error)
	LogsFunc       func(ctx context.Context, p protocol.LogsParams) ([]string, error)
	FollowLogsFunc func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error
	InspectFunc    func(ctx context.Context, containerID string) (protocol.InspectResult, error)
	ListFunc       func(ctx context.Context) ([]protocol.InventoryItem, error)
	StatsFunc      func(ctx context.Context, containerID string) (protocol.StatsResult, error)
	UpdateFunc     func(ctx context.Context, containerID string, l protocol.Limits) ([]string, error)
	EventsFunc     func(ctx context.Context, emit func(protocol.ContainerEvent)) error
	// WatchEventsFunc, when set, serves WatchEvents (agent.EventWatcher):
	// it may call missed as the Docker engine does after a broken stream.
	WatchEventsFunc func(ctx context.Context, emit func(protocol.ContainerEvent), missed func()) error

	// Console sessions (console.go).
	ExecFunc        func(ctx context.Context, p protocol.ExecParams) (protocol.ExecResult, error)
	ExecSessionFunc func(ctx context.Context, p protocol.ExecParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, error)
	AttachFunc      func(ctx context.Context, p protocol.AttachParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, []string, error)
	FollowStatsFunc func(ctx context.Context, p protocol.StatsParams, emit func(protocol.StatsSample) error) (int, error)

	mu    sync.Mutex
	calls []Call
}

// Call records one Runtime method call.
type Call struct {
	Method      string // "Create", "Start", ...
	ContainerID string
}

var _ agent.Runtime = (*Runtime)(nil)

// Calls returns the calls so far, in order.
func (r *Runtime) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// CallCount counts the calls of one method.
func (r *Runtime) CallCount(method string) int {
	n := 0
	for _, c := range r.Calls() {
		if c.Method == method {
			n++
		}
	}
	return n
}

func (r *Runtime) record(method, containerID string) {
	c := Call{Method: method, ContainerID: containerID}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// Info implements agent.Runtime.
func (r *Runtime) Info(ctx context.Context) (protocol.EngineInfo, error) {
	r.record("Info", "")
	if r.InfoFunc != nil {
		return r.InfoFunc(ctx)
	}
	return protocol.EngineInfo{Version: "20.10.24", APIVersion: "1.41"}, nil
}

// Create implements agent.Runtime.
func (r *Runtime) Create(ctx context.Context, p protocol.CreateParams, progress agent.ProgressFunc) (protocol.CreateResult, []string, error) {
	r.record("Create", p.ContainerID)
	if r.CreateFunc != nil {
		return r.CreateFunc(ctx, p, progress)
	}
	return protocol.CreateResult{ContainerID: "docker-" + p.ContainerID}, nil, nil
}

// Start implements agent.Runtime.
func (r *Runtime) Start(ctx context.Context, containerID string) error {
	r.record("Start", containerID)
	if r.StartFunc != nil {
		return r.StartFunc(ctx, containerID)
	}
	return nil
}

// Stop implements agent.Runtime.
func (r *Runtime) Stop(ctx context.Context, containerID string, timeout *int) error {
	r.record("Stop", containerID)
	if r.StopFunc != nil {
		return r.StopFunc(ctx, containerID, timeout)
	}
	return nil
}

// Restart implements agent.Runtime.
func (r *Runtime) Restart(ctx context.Context, containerID string, timeout *int) error {
	r.record("Restart", containerID)
	if r.RestartFunc != nil {
		return r.RestartFunc(ctx, containerID, timeout)
	}
	return nil
}

// Kill implements agent.Runtime.
func (r *Runtime) Kill(ctx context.Context, containerID, signal string) error {
	r.record("Kill", containerID)
	if r.KillFunc != nil {
		return r.KillFunc(ctx, containerID, signal)
	}
	return nil
}

// Delete implements agent.Runtime.
func (r *Runtime) Delete(ctx context.Context, containerID string) (bool, error) {
	r.record("Delete", containerID)
	if r.DeleteFunc != nil {
		return r.DeleteFunc(ctx, containerID)
	}
	return false, nil
}

// Logs implements agent.Runtime.
func (r *Runtime) Logs(ctx context.Context, p protocol.LogsParams) ([]string, error) {
	r.record("Logs", p.ContainerID)
	if r.LogsFunc != nil {
		return r.LogsFunc(ctx, p)
	}
	return []string{}, nil
}

// FollowLogs implements agent.Runtime.
func (r *Runtime) FollowLogs(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
	r.record("FollowLogs", p.ContainerID)
	if r.FollowLogsFunc != nil {
		return r.FollowLogsFunc(ctx, p, emit)
	}
	return nil
}

// Inspect implements agent.Runtime.
func (r *Runtime) Inspect(ctx context.Context, containerID string) (protocol.InspectResult, error) {
	r.record("Inspect", containerID)
	if r.InspectFunc != nil {
		return r.InspectFunc(ctx, containerID)
	}
	return protocol.InspectResult{ContainerID: containerID, DockerID: "docker-" + containerID, State: "running", Running: true}, nil
}

// List implements agent.Runtime.
func (r *Runtime) List(ctx context.Context) ([]protocol.InventoryItem, error) {
	r.record("List", "")
	if r.ListFunc != nil {
		return r.ListFunc(ctx)
	}
	return []protocol.InventoryItem{}, nil
}

// Stats implements agent.Runtime.
func (r *Runtime) Stats(ctx context.Context, containerID string) (protocol.StatsResult, error) {
	r.record("Stats", containerID)
	if r.StatsFunc != nil {
		return r.StatsFunc(ctx, containerID)
	}
	return protocol.StatsResult{ContainerID: containerID}, nil
}

// Update implements agent.Runtime.
func (r *Runtime) Update(ctx context.Context, containerID string, l protocol.Limits) ([]string, error) {
	r.record("Update", containerID)
	if r.UpdateFunc != nil {
		return r.UpdateFunc(ctx, containerID, l)
	}
	return nil, nil
}

// Events implements agent.Runtime.
func (r *Runtime) Events(ctx context.Context, emit func(protocol.ContainerEvent)) error {
	r.record("Events", "")
	if r.EventsFunc != nil {
		return r.EventsFunc(ctx, emit)
	}
	<-ctx.Done()
	return ctx.Err()
}

// WatchEvents implements agent.EventWatcher: WatchEventsFunc, else Events.
func (r *Runtime) WatchEvents(ctx context.Context, emit func(protocol.ContainerEvent), missed func()) error {
	if r.WatchEventsFunc != nil {
		r.record("Events", "")
		return r.WatchEventsFunc(ctx, emit, missed)
	}
	return r.Events(ctx, emit)
}

var _ agent.EventWatcher = (*Runtime)(nil)

// Sampler implements agent.HostSampler with a func; nil gives fixed values.
type Sampler struct {
	SampleFunc func(ctx context.Context) (protocol.HostResources, error)
}

var _ agent.HostSampler = Sampler{}

// Sample implements agent.HostSampler.
func (s Sampler) Sample(ctx context.Context) (protocol.HostResources, error) {
	if s.SampleFunc != nil {
		return s.SampleFunc(ctx)
	}
	return protocol.HostResources{CPU: 0.25, Memory: "512MB", CPUCores: 2, MemoryUsedBytes: 512 << 20, MemoryTotalBytes: 2 << 30}, nil
}
