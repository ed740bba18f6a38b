package agent_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// refusalCounter is an agent.Observer that also counts refusals (RefusalObserver).
type refusalCounter struct {
	mu      sync.Mutex
	reasons map[string]int
}

func (r *refusalCounter) Connected(bool)                                              {}
func (r *refusalCounter) Reconnect()                                                  {}
func (r *refusalCounter) CommandDone(protocol.Action, protocol.Status, time.Duration) {}
func (r *refusalCounter) OutboxDepth(int)                                             {}
func (r *refusalCounter) LogLinesStreamed(int)                                        {}
func (r *refusalCounter) RuntimeError(protocol.Action)                                {}
func (r *refusalCounter) CommandRefused(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reasons == nil {
		r.reasons = map[string]int{}
	}
	r.reasons[reason]++
}

func (r *refusalCounter) count(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reasons[reason]
}

var _ agent.RefusalObserver = (*refusalCounter)(nil)

// envOfSize is an environment of about size bytes on the wire.
func envOfSize(size int) map[string]string {
	env := map[string]string{}
	value := strings.Repeat("v", 90)
	for i := 0; len(env)*100 < size; i++ {
		env[fmt.Sprintf("VAR_%05d", i)] = value
	}
	return env
}

// queueGate blocks the runtime calls for one container until opened.
type queueGate struct {
	container string
	entered   chan string // command ids (or container ids) as they block
	open      chan struct{}
}

func newQueueGate(container string) *queueGate {
	return &queueGate{container: container, entered: make(chan string, 100), open: make(chan struct{})}
}

func (g *queueGate) wait(ctx context.Context, id string) error {
	if id != g.container {
		return nil
	}
	g.entered <- id
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestPendingBytesBoundedWhileAQueueIsBlocked is the attack of issue 7
// part 4 against the agent with a fake runtime: while container "blocked"
// is held by a slow stop, the server floods it with large creates. Only
// what fits in the container's share of MAX_PENDING_BYTES is accepted; the
// rest is answered at once with unavailable, counted; pings are answered
// and other containers served meanwhile; the room is released when the
// commands finish.
func TestPendingBytesBoundedWhileAQueueIsBlocked(t *testing.T) {
	const (
		maxPending = 8 << 20 // a container may hold 2 MiB
		flood      = 40
		envBytes   = 300 << 10
	)
	g := newQueueGate("blocked")
	var (
		mu      sync.Mutex
		created []string
	)
	rt := &agenttest.Runtime{
		StopFunc: func(ctx context.Context, id string, _ *int) error { return g.wait(ctx, id) },
		CreateFunc: func(ctx context.Context, p protocol.CreateParams, _ agent.ProgressFunc) (protocol.CreateResult, []string, error) {
			mu.Lock()
			created = append(created, p.ContainerID)
			mu.Unlock()
			if len(p.Environment) == 0 {
				return protocol.CreateResult{}, nil, fmt.Errorf("environment lost on the way")
			}
			return protocol.CreateResult{ContainerID: "docker-" + p.ContainerID}, nil, nil
		},
	}
	obs := &refusalCounter{}
	h := start(t, rt, setup{opts: func(o *agent.Options) {
		o.MaxPendingBytes = maxPending
		o.Observer = obs
	}})
	h.identified()
	h.srv.Expect(protocol.TypeInventory)

	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "blocked"})
	<-g.entered
	env := envOfSize(envBytes)
	for i := range flood {
		h.send(protocol.Command{ID: fmt.Sprintf("flood-%d", i), Action: protocol.ActionCreate, ContainerID: "blocked",
			EggConfig: &protocol.EggConfig{Image: "img"}, Environment: env})
	}
	h.send(protocol.Ping{})
	h.send(protocol.Command{ID: "other", Action: protocol.ActionCreate, ContainerID: "other",
		EggConfig: &protocol.EggConfig{Image: "img"}, Environment: env})

	// While the stop still blocks: refusalCounter, a pong, the other container.
	if r := h.srv.ExpectResult("other"); r.Status != protocol.StatusSuccess {
		t.Errorf("other container's create while blocked's queue is full: %+v", r)
	}
	h.srv.Expect(protocol.TypePong)
	// Results travel in order: once the last command is answered (refused:
	// the queue is full), every refusal has arrived.
	h.srv.ExpectResult(fmt.Sprintf("flood-%d", flood-1))
	refused := map[string]bool{}
	for _, rec := range h.srv.Received() {
		r, ok := rec.Msg.(protocol.CommandResult)
		if !ok || !strings.HasPrefix(r.CommandID, "flood-") {
			continue
		}
		refused[r.CommandID] = true
		if r.Code != protocol.CodeUnavailable || !strings.Contains(r.Error, `container "blocked" is full`) || !strings.Contains(r.Error, "retry") {
			t.Errorf("%s answered before the stop ended with %+v, want unavailable naming the full queue", r.CommandID, r)
		}
	}
	accepted := flood - len(refused)
	bytes, n := agent.PendingUsage(h.agent, "blocked")
	t.Logf("%d of %d creates of %d KiB accepted behind the blocked stop, holding %d KiB in %d commands; %d refused",
		accepted, flood, envBytes>>10, bytes>>10, n, len(refused))
	if accepted < 1 || len(refused) < flood/2 {
		t.Errorf("%d accepted, %d refused: want a few accepted and most refused", accepted, len(refused))
	}
	if bytes > maxPending/4 {
		t.Errorf("container holds %d bytes, over its share %d", bytes, maxPending/4)
	}
	if n != accepted+1 {
		t.Errorf("%d commands pending for blocked, want %d accepted + the stop", n, accepted)
	}
	if got := obs.count(agent.RefusedContainerBytes); got != len(refused) {
		t.Errorf("refusalCounter counted %d, want %d", got, len(refused))
	}

	// Once the stop ends, the accepted creates run, in order, with their
	// environment, and all their room is released.
	close(g.open)
	h.srv.ExpectResult("stop")
	for i := range flood {
		id := fmt.Sprintf("flood-%d", i)
		if refused[id] {
			continue
		}
		if r := h.srv.ExpectResult(id); r.Status != protocol.StatusSuccess {
			t.Errorf("accepted %s: %+v", id, r)
		}
	}
	mu.Lock()
	if len(created) != accepted+1 { // + other
		t.Errorf("runtime created %v, want the %d accepted and other", created, accepted)
	}
	mu.Unlock()
	if b, n := agent.PendingUsage(h.agent, ""); b != 0 || n != 0 {
		t.Errorf("after every result: %d bytes in %d commands still pending", b, n)
	}
}

// TestPendingRoomReleasedOnCancelAndError: a queued command cancelled by
// the server frees its room at once, so the queue accepts again (a refused
// command retried with its id), and a command that fails frees it as well.
func TestPendingRoomReleasedOnCancelAndError(t *testing.T) {
	g := newQueueGate("web")
	rt := &agenttest.Runtime{
		StopFunc: func(ctx context.Context, id string, _ *int) error { return g.wait(ctx, id) },
		CreateFunc: func(ctx context.Context, p protocol.CreateParams, _ agent.ProgressFunc) (protocol.CreateResult, []string, error) {
			return protocol.CreateResult{}, nil, protocol.Errorf(protocol.CodeConflict, "container %s exists", p.ContainerID)
		},
	}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxPendingBytes = 4 << 20 }}) // 1 MiB per container
	h.identified()
	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "web"})
	<-g.entered
	_, base := agent.PendingUsage(h.agent, "web")
	env := envOfSize(400 << 10)
	create := func(id string) {
		h.send(protocol.Command{ID: id, Action: protocol.ActionCreate, ContainerID: "web", EggConfig: &protocol.EggConfig{Image: "img"}, Environment: env})
	}
	create("big-1")
	create("big-2")
	if r := h.srv.ExpectResult("big-2"); r.Code != protocol.CodeUnavailable {
		t.Fatalf("second large create: %+v, want unavailable (the queue holds one)", r)
	}
	if _, n := agent.PendingUsage(h.agent, "web"); n != base+1 {
		t.Fatalf("%d pending, want %d", n, base+1)
	}
	h.send(protocol.Cancel{CommandID: "big-1"})
	if r := h.srv.ExpectResult("big-1"); !strings.Contains(r.Error, "cancelled") {
		t.Errorf("cancelled: %+v", r)
	}
	if b, n := agent.PendingUsage(h.agent, "web"); n != base || b > 64<<10 {
		t.Errorf("after cancel: %d bytes in %d commands pending, want only the stop's", b, n)
	}
	// The refused command, retried with the same id, is accepted now: a
	// refusal is not remembered as a duplicate.
	create("big-2")
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	if _, n := agent.PendingUsage(h.agent, "web"); n != base+1 {
		t.Errorf("after the cancel freed room: %d pending, want the retried big-2 accepted", n)
	}
	close(g.open)
	if r := h.srv.ExpectResult("big-2"); r.Code != protocol.CodeConflict {
		t.Errorf("retried big-2: %+v, want the runtime's conflict", r)
	}
	if b, n := agent.PendingUsage(h.agent, ""); b != 0 || n != 0 {
		t.Errorf("after a failed command: %d bytes in %d commands still pending", b, n)
	}
}

// TestDuplicateOfQueuedCommandIsNotRefused: the server resending a command
// that is queued while its container's queue is full gets no second
// (unavailable) result: the one result follows when the command runs.
func TestDuplicateOfQueuedCommandIsNotRefused(t *testing.T) {
	g := newQueueGate("web")
	rt := &agenttest.Runtime{StopFunc: func(ctx context.Context, id string, _ *int) error { return g.wait(ctx, id) }}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxPendingBytes = 8 << 20 }}) // 2 MiB per container
	h.identified()
	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "web"})
	<-g.entered
	env := envOfSize(600 << 10)
	cmd := protocol.Command{ID: "dup", Action: protocol.ActionCreate, ContainerID: "web", EggConfig: &protocol.EggConfig{Image: "img"}, Environment: env}
	h.send(cmd)
	h.send(protocol.Command{ID: "full", Action: protocol.ActionCreate, ContainerID: "web", EggConfig: &protocol.EggConfig{Image: "img"}, Environment: env})
	if r := h.srv.ExpectResult("full"); r.Code != protocol.CodeUnavailable {
		t.Fatalf("create into a full queue: %+v", r)
	}
	h.send(cmd) // resent
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	close(g.open)
	if r := h.srv.ExpectResult("dup"); r.Status != protocol.StatusSuccess {
		t.Errorf("dup: %+v", r)
	}
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	n := 0
	for _, rec := range h.srv.Received() {
		if r, ok := rec.Msg.(protocol.CommandResult); ok && r.CommandID == "dup" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d results for the resent command, want 1", n)
	}
}
