package agent_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// recorder is an agent.Observer that records every call.
type recorder struct {
	mu     sync.Mutex
	events []string
	lines  int
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorder) Connected(up bool) { r.add(fmt.Sprint("connected ", up)) }
func (r *recorder) Reconnect()        { r.add("reconnect") }
func (r *recorder) CommandDone(a protocol.Action, s protocol.Status, _ time.Duration) {
	r.add(fmt.Sprintf("done %s %s", a, s))
}
func (r *recorder) OutboxDepth(n int) {}
func (r *recorder) LogLinesStreamed(n int) {
	r.mu.Lock()
	r.lines += n
	r.mu.Unlock()
}
func (r *recorder) RuntimeError(a protocol.Action) { r.add(fmt.Sprint("runtime error ", a)) }

func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e == s {
			return true
		}
	}
	return false
}

func TestObserverSeesTheAgentsSignals(t *testing.T) {
	rec := &recorder{}
	rt := &agenttest.Runtime{
		StartFunc: func(context.Context, string) error {
			return protocol.Errorf(protocol.CodeUnavailable, "Cannot connect to the Docker daemon")
		},
		FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
			for i := 0; i < 7; i++ {
				if err := emit("stdout", fmt.Sprint(i)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.Observer = rec }})
	h.identified()
	h.send(protocol.Command{ID: "s", Action: protocol.ActionStart, ContainerID: "web"})
	h.srv.ExpectResult("s")
	h.send(protocol.Command{ID: "f", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	h.srv.ExpectResult("f")
	h.sendRaw(`{"type":"command","id":"bad","action":"rm -rf","containerId":"web"}`)
	h.srv.ExpectResult("bad")
	h.srv.CloseConns(1012, "restart")
	h.identified()

	for _, want := range []string{
		"connected true", "connected false", "reconnect",
		"done start error", "runtime error start", "done logs success", "done unknown error",
	} {
		want := want
		testsupport.WaitFor(t, want, func() bool { return rec.has(want) })
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.lines != 7 {
		t.Errorf("LogLinesStreamed total %d, want 7", rec.lines)
	}
}

// deliveries is an agent.Observer and agent.DeliveryObserver that counts
// what the agent forgets, drops, sends again and reconciles.
type deliveries struct {
	recorder
	cmu    sync.Mutex
	counts map[string]int
}

func (d *deliveries) count(k string, n int) {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if d.counts == nil {
		d.counts = map[string]int{}
	}
	d.counts[k] += n
}

func (d *deliveries) get(k string) int {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	return d.counts[k]
}

func (d *deliveries) CommandIDsForgotten(reason string, n int) { d.count("forgotten "+reason, n) }
func (d *deliveries) ResultsEvicted(n int)                     { d.count("evicted", n) }
func (d *deliveries) RepeatedCommand(answer string)            { d.count("repeat "+answer, 1) }
func (d *deliveries) ResultsResent(n int)                      { d.count("resent", n) }
func (d *deliveries) ResultsDropped(n int)                     { d.count("results dropped", n) }
func (d *deliveries) ContainerEventsRelayed(n int)             { d.count("events relayed", n) }
func (d *deliveries) ContainerEventsDropped(reason string, n int) {
	d.count("events dropped "+reason, n)
}
func (d *deliveries) InventorySent(reason string) { d.count("inventory "+reason, 1) }

var _ agent.DeliveryObserver = (*deliveries)(nil)

// TestDeliveryObserverCounts: what would otherwise only be logged is
// counted for the metrics: a stored result evicted for the byte budget and
// the repeat of its id answered conflict, events relayed and those dropped
// while disconnected, and the inventories after identify and after a gap
// in the engine's event stream.
func TestDeliveryObserverCounts(t *testing.T) {
	obs := &deliveries{}
	rt, emits := eventsOnDemand()
	h := start(t, rt, setup{opts: func(o *agent.Options) {
		o.Observer = obs
		o.ResultStoreBytes = 1 // every stored result is evicted at once
	}})
	h.identified()
	h.srv.Expect(protocol.TypeInventory)
	testsupport.WaitFor(t, "Ready", func() bool { return h.agent.Ready() == nil })
	testsupport.WaitFor(t, "the identify inventory counted", func() bool { return obs.get("inventory "+agent.InventoryIdentify) == 1 })

	h.send(protocol.Command{ID: "s1", Action: protocol.ActionStart, ContainerID: "web"})
	h.srv.ExpectResult("s1")
	h.send(protocol.Command{ID: "s1", Action: protocol.ActionStart, ContainerID: "web"})
	if r := h.srv.ExpectResult("s1"); r.Code != protocol.CodeConflict {
		t.Errorf("repeat of an evicted id answered %+v, want conflict", r)
	}
	if obs.get("evicted") != 1 || obs.get("repeat "+agent.RepeatConflict) != 1 {
		t.Errorf("evicted %d, repeats answered conflict %d; want 1 and 1", obs.get("evicted"), obs.get("repeat "+agent.RepeatConflict))
	}

	emits <- func(emit func(protocol.ContainerEvent), missed func()) {
		emit(protocol.ContainerEvent{ContainerID: "web", Action: "die", Timestamp: "2026-01-01T00:00:00Z"})
		missed()
	}
	h.srv.Expect(protocol.TypeContainerEvent)
	h.srv.Expect(protocol.TypeInventory)
	testsupport.WaitFor(t, "the event and the reconcile counted", func() bool {
		return obs.get("events relayed") == 1 && obs.get("inventory "+agent.InventoryEventsMissed) == 1
	})

	h.srv.Refuse(503)
	h.srv.DropConns()
	testsupport.WaitFor(t, "disconnect", func() bool { return h.agent.Ready() != nil })
	emits <- func(emit func(protocol.ContainerEvent), missed func()) {
		emit(protocol.ContainerEvent{ContainerID: "web", Action: "start", Timestamp: "2026-01-01T00:00:01Z"})
	}
	testsupport.WaitFor(t, "the dropped event counted", func() bool { return obs.get("events dropped "+agent.EventsDroppedDisconnected) == 1 })
}
