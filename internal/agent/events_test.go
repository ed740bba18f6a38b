package agent_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// eventsOnDemand is a runtime whose event stream runs, on its own
// goroutine, each function the test sends on emits.
func eventsOnDemand() (rt *agenttest.Runtime, emits chan func(emit func(protocol.ContainerEvent), missed func())) {
	emits = make(chan func(emit func(protocol.ContainerEvent), missed func()))
	rt = &agenttest.Runtime{WatchEventsFunc: func(ctx context.Context, emit func(protocol.ContainerEvent), missed func()) error {
		for {
			select {
			case f := <-emits:
				f(emit, missed)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}}
	return rt, emits
}

// TestInventoryAfterMissedEvents: when the engine's event stream had a gap
// (missed), the agent sends an inventory after the events queued before
// it, so the server can reconcile what it did not see.
func TestInventoryAfterMissedEvents(t *testing.T) {
	rt, emits := eventsOnDemand()
	h := start(t, rt, setup{})
	h.identified()
	h.srv.Expect(protocol.TypeInventory)
	testsupport.WaitFor(t, "Ready", func() bool { return h.agent.Ready() == nil })
	emits <- func(emit func(protocol.ContainerEvent), missed func()) {
		emit(protocol.ContainerEvent{ContainerID: "web", Action: "die", Timestamp: "2026-01-01T00:00:00Z"})
		missed()
	}
	if ev := h.srv.Expect(protocol.TypeContainerEvent).(protocol.ContainerEvent); ev.Action != "die" {
		t.Errorf("event %+v", ev)
	}
	h.srv.Expect(protocol.TypeInventory)
	var order []string
	for _, r := range h.srv.Received() {
		if r.Type == protocol.TypeContainerEvent || r.Type == protocol.TypeInventory {
			order = append(order, r.Type)
		}
	}
	if want := []string{"inventory", "container_event", "inventory"}; !slices.Equal(order, want) {
		t.Errorf("messages %q, want %q", order, want)
	}
}

// TestEventReaderNeverWaitsForServer: while the server reads nothing, the
// engine's reader still hands over every event at once (the Docker daemon
// drops the events of a subscriber that falls behind, without a word); the
// agent drops the oldest beyond its queue, says so, and sends an inventory
// once the server reads again. The reader used to wait for each write.
func TestEventReaderNeverWaitsForServer(t *testing.T) {
	const n = 20000
	emitted := make(chan struct{})
	start1 := make(chan struct{})
	rt := &agenttest.Runtime{WatchEventsFunc: func(ctx context.Context, emit func(protocol.ContainerEvent), missed func()) error {
		select {
		case <-start1:
		case <-ctx.Done():
			return ctx.Err()
		}
		for i := range n {
			emit(protocol.ContainerEvent{ContainerID: fmt.Sprint("c", i), Action: "start", Timestamp: strings.Repeat("t", 200)})
		}
		close(emitted)
		<-ctx.Done()
		return ctx.Err()
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.srv.Expect(protocol.TypeInventory)
	testsupport.WaitFor(t, "Ready", func() bool { return h.agent.Ready() == nil })
	h.srv.SetReadDelay(time.Hour) // reads one more frame, then nothing
	close(start1)
	select {
	case <-emitted:
	case <-time.After(agenttest.DefaultWait):
		t.Fatal("the event reader waited for the stalled server")
	}
	testsupport.WaitFor(t, "the drop logged", func() bool {
		return len(h.logs.entries("container events dropped: the server reads slower than they happen; an inventory follows")) > 0
	})
	h.srv.SetReadDelay(0)
	ctx := waitCtx(t)
	for {
		r, err := h.srv.NextFrame(ctx, protocol.TypeInventory)
		if err != nil {
			t.Fatal(err)
		}
		if r.Conn == 1 {
			break
		}
	}
	got := h.srv.Count(protocol.TypeContainerEvent)
	t.Logf("%d of %d events sent to the stalled server, then an inventory", got, n)
	if got >= n {
		t.Errorf("%d events sent: nothing was dropped, the test proves nothing", got)
	}
}
