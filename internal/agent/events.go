package agent

import (
	"context"
	"sync"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// EventWatcher is implemented by a Runtime whose event stream can tell
// when events may have been missed (internal/docker: its stream broke and
// the daemon's replay did not cover the gap). WatchEvents is Events that
// also calls missed then; the agent answers with a fresh inventory.
type EventWatcher interface {
	WatchEvents(ctx context.Context, emit func(protocol.ContainerEvent), missed func()) error
}

// eventQueueMax bounds the container events read from the engine and not
// yet sent. The engine's reader never waits for the server (the Docker
// daemon drops the events of a subscriber that falls behind, silently);
// when the server is slower than the events, the oldest queued events are
// dropped, counted, and an inventory follows.
const eventQueueMax = 4096

// eventQueue holds container events between the engine's reader and the
// sender, in order.
type eventQueue struct {
	mu      sync.Mutex
	items   []queuedEvent
	resync  bool   // an inventory is due once the queue is sent
	why     string // why it is due (Inventory*)
	dropped int
	notify  chan struct{}
}

// queuedEvent is an event and the session it happened in: it goes out on
// that session only (the next one starts with an inventory).
type queuedEvent struct {
	ev   protocol.ContainerEvent
	sess *session
}

func newEventQueue() *eventQueue { return &eventQueue{notify: make(chan struct{}, 1)} }

func (q *eventQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// eventsLoop relays the engine's container events for the agent's whole
// life (docs/protocol.md). Events go out only while connected: they describe the
// present, and the inventory after each identify covers what was missed;
// so does an inventory after the engine's stream had a gap it could not
// replay, or after events were dropped for a slow server.
//
// The runtime resubscribes by itself when its stream breaks (Runtime.Events:
// internal/docker, with the daemon's replay); the agent does not retry on
// top of it. A stream that ends while ctx lasts is one the runtime gave up
// on: the agent says so, sends an inventory, and reports itself not alive
// (/healthz), so that it is restarted.
func (a *Agent) eventsLoop(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.relayEvents(ctx)
	}()
	defer wg.Wait()

	var err error
	if watcher, ok := a.opts.Runtime.(EventWatcher); ok {
		err = watcher.WatchEvents(ctx, a.queueEvent, a.eventsMissed)
	} else {
		err = a.opts.Runtime.Events(ctx, a.queueEvent)
	}
	if ctx.Err() != nil {
		return
	}
	a.eventsUp.Store(false)
	a.log.Error("container event stream ended: container events are no longer relayed (inventories still are); restart the agent",
		"err", err)
	a.eventsMissed()
}

// queueEvent queues an event for the connected server, never waiting.
func (a *Agent) queueEvent(ev protocol.ContainerEvent) {
	s := a.current()
	if s == nil {
		a.log.Debug("container event not sent: disconnected", "containerId", ev.ContainerID, "event", ev.Action)
		a.obs.ContainerEventsDropped(EventsDroppedDisconnected, 1)
		return
	}
	q := a.events
	q.mu.Lock()
	dropped := 0
	for len(q.items) >= eventQueueMax {
		q.items[0] = queuedEvent{}
		q.items = q.items[1:]
		dropped++
	}
	q.items = append(q.items, queuedEvent{ev: ev, sess: s})
	if dropped > 0 {
		q.dropped += dropped
		q.resync, q.why = true, InventoryEventsDropped
	}
	total := q.dropped
	q.mu.Unlock()
	if dropped > 0 {
		a.obs.ContainerEventsDropped(EventsDroppedQueueFull, dropped)
		if ok, n := a.eventDrop.Allow(); ok {
			a.log.Warn("container events dropped: the server reads slower than they happen; an inventory follows",
				"droppedTotal", total, "suppressedLogs", n, "queue", eventQueueMax)
		}
	}
	q.wake()
}

// eventsMissed asks for an inventory once the queued events are sent:
// the engine's stream was broken, events may be missing.
func (a *Agent) eventsMissed() {
	q := a.events
	q.mu.Lock()
	if !q.resync {
		q.resync, q.why = true, InventoryEventsMissed
	}
	q.mu.Unlock()
	q.wake()
}

// relayEvents sends queued events in order, each on the session it
// happened in, then the inventory when one is due.
func (a *Agent) relayEvents(ctx context.Context) {
	q := a.events
	for {
		q.mu.Lock()
		var (
			item   queuedEvent
			ok     bool
			resync bool
			why    string
		)
		if len(q.items) > 0 {
			item, ok = q.items[0], true
			q.items[0] = queuedEvent{}
			q.items = q.items[1:]
		} else if q.resync {
			resync, why, q.resync = true, q.why, false
		}
		q.mu.Unlock()
		switch {
		case ok:
			a.sendEvent(item)
		case resync:
			// Disconnected: the next identify sends an inventory anyway.
			if s := a.current(); s != nil && s.waitOpen(ctx) {
				a.log.Info("container events may have been missed: sending an inventory")
				s.sendInventory(why)
			}
		default:
			select {
			case <-q.notify:
			case <-ctx.Done():
				return
			}
		}
	}
}

// sendEvent sends one event on the session it happened in, if that is
// still the connected one, after its inventory.
func (a *Agent) sendEvent(item queuedEvent) {
	s, ev := item.sess, item.ev
	if s != a.current() {
		a.log.Debug("container event not sent: its connection ended", "containerId", ev.ContainerID, "event", ev.Action)
		a.obs.ContainerEventsDropped(EventsDroppedDisconnected, 1)
		return
	}
	if !s.waitOpen(s.ctx) {
		a.obs.ContainerEventsDropped(EventsDroppedDisconnected, 1)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, a.tm.writeTimeout)
	defer cancel()
	if err := s.send(ctx, ev); err != nil {
		a.log.Debug("container event not sent", "containerId", ev.ContainerID, "event", ev.Action, "err", err)
		a.obs.ContainerEventsDropped(EventsDroppedDisconnected, 1)
		return
	}
	a.obs.ContainerEventsRelayed(1)
}
