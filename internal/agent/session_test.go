package agent_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func TestOpenSendsIdentifyInventoryThenHeartbeat(t *testing.T) {
	rt := &agenttest.Runtime{
		ListFunc: func(context.Context) ([]protocol.InventoryItem, error) {
			return []protocol.InventoryItem{
				{ContainerID: "web", DockerID: "d1", State: "running", Image: "nginx", CreatedAt: "2026-01-01T00:00:00Z"},
				{ContainerID: "db", DockerID: "d2", State: "exited", Image: "postgres", CreatedAt: "2026-01-01T00:00:00Z"},
			}, nil
		},
	}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.HeartbeatInterval = time.Hour }})
	ctx := waitCtx(t)

	var types []string
	var frames []agenttest.Received
	for len(frames) < 3 {
		r, err := h.srv.NextFrame(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, r)
		types = append(types, r.Type)
	}
	if want := []string{"agent_identify", "inventory", "heartbeat"}; !slices.Equal(types, want) {
		t.Fatalf("first frames %v, want %v", types, want)
	}

	id := frames[0].Msg.(protocol.AgentIdentify)
	if id.NodeName != "node-a" || id.Version != "9.9.9" || id.ProtocolVersion != 1 {
		t.Errorf("identify = %+v, want nodeName node-a, version 9.9.9, protocolVersion 1", id)
	}
	if id.OS != runtime.GOOS || id.Arch != runtime.GOARCH || id.Hostname == "" {
		t.Errorf("identify os/arch/hostname = %q/%q/%q", id.OS, id.Arch, id.Hostname)
	}
	if id.Engine == nil || id.Engine.APIVersion != "1.41" {
		t.Errorf("identify engine = %+v, want the runtime's Info", id.Engine)
	}
	for _, c := range []string{"inventory", "container_event", "kill", "follow", "cancel"} {
		if !slices.Contains(id.Capabilities, c) {
			t.Errorf("capabilities %v lack %q", id.Capabilities, c)
		}
	}

	inv := frames[1].Msg.(protocol.Inventory)
	if len(inv.Containers) != 2 || inv.Containers[0].ContainerID != "web" {
		t.Errorf("inventory = %+v, want the runtime's two containers", inv)
	}

	hb := frames[2].Msg.(protocol.Heartbeat)
	if hb.NodeID != "node-123" {
		t.Errorf("heartbeat nodeId = %q, want node-123 from the token's claims", hb.NodeID)
	}
	if hb.Resources.Containers == nil || *hb.Resources.Containers != (protocol.ContainerCounts{Running: 1, Total: 2}) {
		t.Errorf("heartbeat containers = %+v, want running 1 of 2", hb.Resources.Containers)
	}
	if _, err := time.Parse(time.RFC3339, hb.Timestamp); err != nil {
		t.Errorf("heartbeat timestamp %q is not RFC 3339: %v", hb.Timestamp, err)
	}
	if hb.Resources.Memory != "512MB" || hb.Resources.CPU != 0.25 {
		t.Errorf("heartbeat resources = %+v, want the sampler's values", hb.Resources)
	}

	up := h.srv.Upgrades()[0]
	if got := up.Header.Get("User-Agent"); got != "Lormas-Node-Agent/9.9.9" {
		t.Errorf("User-Agent = %q", got)
	}
	testsupport.WaitFor(t, "Ready", func() bool { return h.agent.Ready() == nil })
	if err := h.agent.Alive(); err != nil {
		t.Errorf("Alive = %v while running", err)
	}
}

func TestStatusEventsOffSendsNoInventory(t *testing.T) {
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.StatusEvents = false }})
	id := h.identified()
	if slices.Contains(id.Capabilities, "inventory") || slices.Contains(id.Capabilities, "container_event") {
		t.Errorf("capabilities %v announce status events that are off", id.Capabilities)
	}
	r, err := h.srv.NextFrame(waitCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != protocol.TypeHeartbeat {
		t.Errorf("after identify got %q, want heartbeat (no inventory)", r.Type)
	}
}

func TestIdentifyWithoutEngineWhenInfoFails(t *testing.T) {
	rt := &agenttest.Runtime{
		InfoFunc: func(context.Context) (protocol.EngineInfo, error) {
			return protocol.EngineInfo{}, protocol.Errorf(protocol.CodeUnavailable, "cannot connect to the Docker daemon")
		},
		ListFunc: func(context.Context) ([]protocol.InventoryItem, error) {
			return nil, protocol.Errorf(protocol.CodeUnavailable, "cannot connect to the Docker daemon")
		},
	}
	h := start(t, rt, setup{})
	id := h.identified()
	if id.Engine != nil {
		t.Errorf("identify carries engine %+v though Info failed", id.Engine)
	}
	// No inventory while the engine is down: an empty one would claim
	// every container is gone.
	r, err := h.srv.NextFrame(waitCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != protocol.TypeHeartbeat {
		t.Errorf("after identify got %q, want heartbeat (no inventory)", r.Type)
	}
	if hb := r.Msg.(protocol.Heartbeat); hb.Resources.Containers != nil {
		t.Errorf("heartbeat has container counts %+v though List failed", hb.Resources.Containers)
	}
	if err := h.agent.Ready(); err == nil {
		t.Error("Ready = nil while the engine is unreachable")
	}
}

func TestHeartbeatsEveryInterval(t *testing.T) {
	samples := 0
	rt := &agenttest.Runtime{}
	h := start(t, rt, setup{opts: func(o *agent.Options) {
		o.HeartbeatInterval = 50 * time.Millisecond
		o.Host = agenttest.Sampler{SampleFunc: func(context.Context) (protocol.HostResources, error) {
			samples++
			if samples == 2 {
				return protocol.HostResources{}, errors.New("proc not mounted")
			}
			return protocol.HostResources{CPU: float64(samples) / 10, Memory: "100MB"}, nil
		}}
	}})
	var cpus []float64
	for i := 0; i < 3; i++ {
		hb := h.srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
		if hb.NodeID != "node-123" {
			t.Errorf("heartbeat nodeId = %q, want node-123", hb.NodeID)
		}
		cpus = append(cpus, hb.Resources.CPU)
	}
	// The second sample failed: that beat was skipped, not sent with zeros.
	if want := []float64{0.1, 0.3, 0.4}; !slices.Equal(cpus, want) {
		t.Errorf("heartbeat cpu values %v, want %v", cpus, want)
	}
	if n := len(h.logs.entries("host metrics unavailable: heartbeat skipped")); n != 1 {
		t.Errorf("sampling failure logged %d times, want 1", n)
	}
}

func TestNodeIDFallbacks(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		nodeID string
		want   string
	}{
		{"sub claim only", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdWItNDIifQ.c2ln", "", "sub-42"},
		{"not a JWT, NODE_ID", "plain-secret-token", "node-from-env", "node-from-env"},
		{"not a JWT, no NODE_ID", "plain-secret-token", "", "node-a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, nil, setup{
				srvOpts: agenttest.ServerOptions{Token: tc.token},
				opts: func(o *agent.Options) {
					o.NodeID = tc.nodeID
					o.StatusEvents = false
				},
				noStart: true,
			})
			h.setToken(tc.token)
			h.run()
			hb := h.srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
			if hb.NodeID != tc.want {
				t.Errorf("nodeId = %q, want %q", hb.NodeID, tc.want)
			}
			if tc.token != "" && hb.NodeID == tc.token[:8] {
				t.Error("nodeId is a slice of the token")
			}
		})
	}
}

func TestPongWhileSlowCommandRuns(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	rt := &agenttest.Runtime{StartFunc: func(ctx context.Context, id string) error {
		entered <- struct{}{}
		<-release
		return nil
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxConcurrentCommands = 1 }})
	h.identified()
	h.send(protocol.Command{ID: "slow-1", Action: protocol.ActionStart, ContainerID: "a"})
	h.send(protocol.Command{ID: "slow-2", Action: protocol.ActionStart, ContainerID: "b"}) // waits for the global slot
	<-entered
	for i := 0; i < 3; i++ {
		h.send(protocol.Ping{})
		h.srv.Expect(protocol.TypePong)
	}
	if n := h.srv.Count(protocol.TypeCommandResult); n != 0 {
		t.Fatalf("%d results before the slow commands finished", n)
	}
	close(release)
	for _, id := range []string{"slow-1", "slow-2"} {
		if r := h.srv.ExpectResult(id); r.Status != protocol.StatusSuccess {
			t.Errorf("%s: %+v", id, r)
		}
	}
}

// fakeClock is a backoff.Clock whose time moves only when the test says:
// every wait ends at once and is recorded.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) waited() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

func TestServerCloseReconnectsWithGrowingBackoff(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := start(t, nil, setup{
		opts: func(o *agent.Options) {
			o.ReconnectDelay, o.ReconnectMaxDelay = 5*time.Millisecond, 40*time.Millisecond
		},
		timing: agent.Timing{StableAfter: time.Second, Clock: clock},
	})
	// A server that accepts and at once closes: attempts keep counting.
	for i := 0; i < 4; i++ {
		h.identified()
		h.srv.CloseConns(1000, "go away")
	}
	h.identified()
	// Stay up past the stable period, then close: the backoff resets.
	clock.advance(2 * time.Second)
	h.srv.CloseConns(1012, "restarting")
	h.identified()

	var attempts []float64
	for _, e := range h.logs.entries("reconnecting") {
		attempts = append(attempts, e["attempt"].(float64))
	}
	if want := []float64{1, 2, 3, 4, 1}; !slices.Equal(attempts, want) {
		t.Errorf("reconnect attempts %v, want %v (growing, reset after a stable connection)", attempts, want)
	}
	ceilings := []time.Duration{5, 10, 20, 40, 5}
	waits := clock.waited()
	if len(waits) != len(ceilings) {
		t.Fatalf("waited %v, want %d waits", waits, len(ceilings))
	}
	for i, w := range waits {
		if ceil := ceilings[i] * time.Millisecond; w < 0 || w > ceil {
			t.Errorf("wait %d = %v, want within [0, %v]", i+1, w, ceil)
		}
	}
	if got := h.srv.Connections(); got != 6 {
		t.Errorf("got %d connections, want 6", got)
	}
	if len(h.logs.entries("disconnected")) < 5 {
		t.Errorf("disconnects not logged")
	}
}

func TestAuthFailureLoggedOnceAndTokenReread(t *testing.T) {
	good := nodeToken(t, "node-123", "rotated")
	h := start(t, nil, setup{srvOpts: agenttest.ServerOptions{Token: good}})
	ctx := waitCtx(t)
	if err := h.srv.WaitUpgrades(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if h.srv.Connections() != 0 {
		t.Fatal("a refused token got through")
	}
	// The token file is rotated: the next dial uses the new token.
	h.setToken(good)
	h.identified()
	ups := h.srv.Upgrades()
	for _, u := range ups[:len(ups)-1] {
		if u.Status != 401 {
			t.Errorf("upgrade status %d before rotation, want 401", u.Status)
		}
	}
	if last := ups[len(ups)-1]; last.Status != 101 || last.Query.Get("token") != good {
		t.Errorf("last upgrade status %d, want 101 with the rotated token", last.Status)
	}
	rejected := h.logs.entries("server rejected the node token")
	if len(rejected) != 1 {
		t.Fatalf("auth failure logged %d times at error level, want once per streak", len(rejected))
	}
	if reason, _ := rejected[0]["reason"].(string); reason == "" || rejected[0]["level"] != "ERROR" {
		t.Errorf("auth log entry %v lacks a reason or is not an error", rejected[0])
	}

	// The server revokes the token on a live connection (close 4001): a new
	// streak, logged once more, and the agent keeps retrying.
	revoked := good
	good = nodeToken(t, "node-123", "third")
	h.srv.SetToken(good)
	h.srv.CloseConns(4001, "token revoked")
	n := len(h.srv.Upgrades())
	if err := h.srv.WaitUpgrades(ctx, n+3); err != nil {
		t.Fatal(err)
	}
	h.setToken(good)
	h.identified()
	rejected = h.logs.entries("server rejected the node token")
	if len(rejected) != 2 {
		t.Fatalf("auth failures logged %d times, want 2 (one per streak)", len(rejected))
	}
	if reason, _ := rejected[1]["reason"].(string); reason != "closed with code 4001: token revoked" {
		t.Errorf("second streak reason = %q", reason)
	}
	h.secret = append(h.secret, revoked)
}

func TestMaxReconnectAttempts(t *testing.T) {
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.MaxReconnectAttempts = 3 }, noStart: true})
	h.srv.Refuse(503)
	h.run()
	err := h.wait()
	if !errors.Is(err, agent.ErrMaxReconnects) {
		t.Fatalf("Run = %v, want ErrMaxReconnects", err)
	}
	if got := len(h.srv.Upgrades()); got != 4 {
		t.Errorf("got %d dials, want 4 (the first and 3 retries)", got)
	}
	if err := h.agent.Alive(); err == nil {
		t.Error("Alive = nil after Run returned")
	}
}

func TestKeepaliveRedialsHalfOpenServer(t *testing.T) {
	h := start(t, nil, setup{timing: agent.Timing{PingInterval: 50 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}})
	h.identified()
	h.srv.SwallowPings(true)
	ctx := waitCtx(t)
	if err := h.srv.WaitConnections(ctx, 2); err != nil {
		t.Fatal(err)
	}
	h.srv.SwallowPings(false)
	h.identified()
	found := false
	for _, e := range h.logs.entries("disconnected") {
		if s, _ := e["err"].(string); s != "" && strings.Contains(s, "keepalive") {
			found = true
		}
	}
	if !found {
		t.Error("the dead connection was not logged as a keepalive failure")
	}
}

func TestRunReturnsNilWhenCancelledWhileDisconnected(t *testing.T) {
	h := start(t, nil, setup{noStart: true})
	h.srv.Refuse(503)
	h.run()
	if err := h.srv.WaitUpgrades(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := h.agent.Ready(); err == nil {
		t.Error("Ready = nil while disconnected")
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestRunTwice(t *testing.T) {
	h := start(t, nil, setup{})
	h.identified()
	if err := h.agent.Run(context.Background()); err == nil {
		t.Error("second Run returned nil, want an error")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	rt := &agenttest.Runtime{}
	tok := func() (string, error) { return "t", nil }
	tests := []struct {
		name string
		opts agent.Options
	}{
		{"no runtime", agent.Options{ServerURL: "ws://x", Token: tok}},
		{"no token", agent.Options{ServerURL: "ws://x", Runtime: rt}},
		{"bad scheme", agent.Options{ServerURL: "ftp://x", Token: tok, Runtime: rt}},
		{"missing CA file", agent.Options{ServerURL: "wss://x", Token: tok, Runtime: rt, TLSCAFile: "/nonexistent/ca.pem"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := agent.New(tc.opts); err == nil {
				t.Error("New succeeded")
			}
		})
	}
}

// Container events happening while the inventory is gathered wait for it:
// the server hears agent_identify, then inventory, then events (docs/protocol.md).
func TestEventsWaitForInventory(t *testing.T) {
	var (
		listing = make(chan struct{}) // the first List began
		flowed  = make(chan struct{}) // events were emitted while it ran
	)
	rt := &agenttest.Runtime{
		EventsFunc: func(ctx context.Context, emit func(protocol.ContainerEvent)) error {
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(2 * time.Millisecond):
				}
				emit(protocol.ContainerEvent{ContainerID: "web", Action: "start", Timestamp: protocol.Timestamp(time.Now())})
				switch n {
				case 5: // from here on, the inventory is being gathered
					select {
					case <-listing:
					case <-ctx.Done():
						return nil
					}
				case 10:
					close(flowed)
				}
			}
		},
		ListFunc: func(ctx context.Context) ([]protocol.InventoryItem, error) {
			select {
			case <-listing:
			default:
				close(listing)
				select { // events flow meanwhile
				case <-flowed:
				case <-ctx.Done():
				}
			}
			return []protocol.InventoryItem{{ContainerID: "web", DockerID: "d1", State: "running"}}, nil
		},
	}
	h := start(t, rt, setup{})
	ctx := waitCtx(t)
	var types []string
	for !slices.Contains(types, protocol.TypeContainerEvent) {
		r, err := h.srv.NextFrame(ctx, "")
		if err != nil {
			t.Fatalf("after %v: %v", types, err)
		}
		types = append(types, r.Type)
	}
	if len(types) < 3 || types[0] != protocol.TypeAgentIdentify || types[1] != protocol.TypeInventory {
		t.Errorf("first frames %v, want agent_identify, inventory, then events", types)
	}
}

// A container engine that stops answering delays no heartbeat by more than
// half an interval: the beat goes out without container counts.
func TestHeartbeatsWhileEngineHangs(t *testing.T) {
	var calls atomic.Int64
	rt := &agenttest.Runtime{
		ListFunc: func(ctx context.Context) ([]protocol.InventoryItem, error) {
			if calls.Add(1) == 1 {
				return nil, nil // the inventory at open
			}
			<-ctx.Done() // then the daemon hangs
			return nil, protocol.Errorf(protocol.CodeTimeout, "the Docker Engine did not answer in time")
		},
	}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.HeartbeatInterval = 100 * time.Millisecond }})
	h.identified()
	for i := 0; i < 3; i++ {
		hb := h.srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
		if i > 0 && hb.Resources.Containers != nil {
			t.Errorf("heartbeat %d has container counts %+v though List hangs", i, hb.Resources.Containers)
		}
	}
}
