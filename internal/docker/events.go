package docker

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// eventActions are the container actions relayed as container_event.
// health_status arrives as "health_status: healthy" and is relayed whole.
var eventActions = []string{"start", "die", "oom", "stop", "kill", "restart", "destroy", "health_status"}

const (
	// eventsStableAfter is how long a subscription must have lasted for the
	// next failure to start again from the shortest backoff.
	eventsStableAfter = 10 * time.Second
	// eventsReplayMargin: a resubscription asks for the events since this
	// long before the newest one seen. The daemon stamps an event before it
	// appends it to its buffer and publishes it, concurrently with other
	// events, so neither its stream nor its buffer is in time order, and
	// its replay stops at the first event older than since.
	eventsReplayMargin = time.Second
	// eventsReplayWait is how long a resubscription waits for the daemon's
	// replay to show the last event read before the break (the daemon
	// writes its replay before anything new, so at once): when it does
	// not, the gap was longer than the daemon's buffer.
	eventsReplayWait = 2 * time.Second
	// recentEventsMax bounds the identities of events relayed recently,
	// which tell a replayed event from a new one (a second's worth of
	// events of a busy node is a few hundred).
	recentEventsMax = 4096
	// eventsProbeTimeout bounds the ping that checks the daemon is back
	// before a resubscription.
	eventsProbeTimeout = 5 * time.Second
)

// Events calls emit for each event of a container this agent manages
// (WatchEvents without missed).
func (e *Engine) Events(ctx context.Context, emit func(protocol.ContainerEvent)) error {
	return e.WatchEvents(ctx, emit, nil)
}

// WatchEvents calls emit for each relayed event of a container this agent
// manages, until ctx ends (then it returns nil): it is the one place that
// resubscribes, so it never returns while ctx lasts. Every event is
// relayed, whatever its time stamp: the daemon publishes events out of
// time order. emit must not block: while it runs no event is read, and the
// daemon drops the events of a subscriber that does not keep up.
//
// When the stream breaks (the daemon restarted or is unreachable) it
// probes the daemon with a ping every second at most (internal/backoff,
// from eventsMinBackoff, capped at eventsMaxBackoff) and subscribes again
// as soon as it answers, asking for the events since shortly before the
// newest one seen: the daemon replays what happened meanwhile from its
// buffer, and events relayed before are recognised by their identity
// (container, action, time stamp) and not relayed twice. The gap is
// covered when the replay reaches back to the last event read before the
// break. When it does not (a restarted daemon keeps no events; a busy one
// keeps its last 256), missed, when not nil, is called, so the caller can
// reconcile (an inventory).
func (e *Engine) WatchEvents(ctx context.Context, emit func(protocol.ContainerEvent), missed func()) error {
	w := &eventsWatch{since: time.Now(), recent: newRecentEvents(recentEventsMax), emit: emit, missed: missed}
	retry := backoff.New(e.eventsMinBackoff, e.eventsMaxBackoff, backoff.WithStableAfter(eventsStableAfter))
	for {
		err := e.subscribe(ctx, w, func() { retry.MarkConnected(time.Now()) })
		if ctx.Err() != nil {
			return nil
		}
		retry.MarkDisconnected(time.Now()) // a stable subscription starts the backoff over
		// The first failure of a streak is worth a warning; the retries of a
		// daemon that stays down only at debug level.
		if retry.Attempt() == 0 {
			e.log.Warn("docker events stream ended, resubscribing", "err", err)
		} else {
			e.log.Debug("docker events resubscribe failed", "err", err, "attempt", retry.Attempt())
		}
		for {
			if retry.Wait(ctx) != nil {
				return nil
			}
			if e.pingDaemon(ctx) == nil {
				break
			}
		}
	}
}

// eventsWatch is what WatchEvents keeps across subscriptions.
type eventsWatch struct {
	since   time.Time // the newest event seen (the daemon's clock), or the start
	recent  *recentEvents
	last    eventID // the last event read, in the stream's order
	hasLast bool
	resub   bool // a subscription was up before: the next one has a gap to cover
	owed    bool // a gap neither shown covered nor reconciled yet
	emit    func(protocol.ContainerEvent)
	missed  func()
}

// gap tells the caller that events may have been missed.
func (w *eventsWatch) gap() {
	w.owed = false
	if w.missed != nil {
		w.missed()
	}
}

// pingDaemon pings the daemon: cheap, bounded, and a daemon that answers it is
// worth subscribing to again.
func (e *Engine) pingDaemon(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(e.callTimeout, eventsProbeTimeout))
	defer cancel()
	_, err := e.cli.Ping(ctx)
	return err
}

// subscribe relays events from one subscription until it fails. up is
// called once the daemon has answered the subscription.
func (e *Engine) subscribe(ctx context.Context, w *eventsWatch, up func()) error {
	if err := e.ready(ctx, "subscribe to docker events"); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the client's goroutine
	// The container index is current only while this subscription runs;
	// the daemon replays the events since shortly before the last one seen,
	// so none that could make an entry stale is missed from here on.
	e.index.subscribed(true)
	defer e.index.subscribed(false)
	since := w.since
	if w.resub {
		since = since.Add(-eventsReplayMargin)
	}
	// The client waits for the daemon's answer without a deadline: a hung
	// daemon must not hold the events loop forever.
	timer := time.AfterFunc(e.callTimeout, cancel)
	msgs, errs := e.cli.Events(ctx, events.ListOptions{
		Since: unixNano(since),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("label", policy.LabelManaged+"="+policy.ManagedValue),
		),
	})
	if !timer.Stop() {
		return protocol.Errorf(protocol.CodeTimeout, "subscribe to docker events: no answer within %s", e.callTimeout)
	}
	// A failed request reports its error right after Events returns.
	select {
	case err := <-errs:
		return err
	case <-time.After(10 * time.Millisecond):
	}
	up()

	// After a break, the replay covers the gap if it holds the last event
	// read before it: the daemon's buffer then reached back that far.
	var (
		checking bool
		marker   eventID
		replayed <-chan time.Time
	)
	if w.resub {
		if !w.hasLast || w.owed {
			w.gap() // nothing to recognise the replay by, or an earlier gap still open
		} else {
			checking, marker = true, w.last
			t := time.NewTimer(e.eventsReplayWait)
			defer t.Stop()
			replayed = t.C
		}
	}
	w.resub = true
	defer func() {
		if checking { // broke again before the replay showed: still open
			w.owed = true
		}
		if n := w.recent.newest; n != 0 {
			w.since = time.Unix(0, n)
		}
	}()
	for {
		select {
		case err := <-errs:
			return err
		case <-replayed:
			if checking {
				checking = false
				e.log.Info("docker events: the daemon's replay did not reach back to the last event seen (it restarted, or more happened than it keeps); events may have been missed")
				w.gap()
			}
		case m := <-msgs:
			k := idOf(m)
			if checking && k == marker {
				checking = false
				e.log.Debug("docker events: the daemon's replay covered the gap")
			}
			w.last, w.hasLast = k, true
			e.index.apply(m)
			if !w.recent.add(m) {
				continue // replayed after a resubscription: relayed before
			}
			if ev, ok := e.containerEvent(m); ok {
				w.emit(ev)
			}
		}
	}
}

// eventID identifies a Docker event.
type eventID struct {
	id, action string
	nano       int64
}

// recentEvents remembers the identities of the latest events seen (at
// most max), oldest forgotten first, and the newest time stamp. It grows
// with the events: an idle node's agent holds a few entries, not max.
type recentEvents struct {
	seen   map[eventID]struct{}
	ring   []eventID
	max    int
	next   int
	newest int64 // unix nanoseconds
}

func newRecentEvents(n int) *recentEvents {
	return &recentEvents{seen: make(map[eventID]struct{}), max: n}
}

// idOf is the identity of a Docker event.
func idOf(m events.Message) eventID {
	return eventID{id: m.Actor.ID, action: string(m.Action), nano: m.TimeNano}
}

// add records m and reports whether it is new.
func (r *recentEvents) add(m events.Message) bool {
	k := idOf(m)
	if _, ok := r.seen[k]; ok {
		return false
	}
	r.newest = max(r.newest, m.TimeNano)
	if len(r.ring) < r.max {
		r.ring = append(r.ring, k)
	} else {
		delete(r.seen, r.ring[r.next])
		r.ring[r.next] = k
		r.next = (r.next + 1) % len(r.ring)
	}
	r.seen[k] = struct{}{}
	return true
}

// containerEvent maps a Docker event to a container_event, if it is one of
// eventActions for a container of this agent.
func (e *Engine) containerEvent(m events.Message) (protocol.ContainerEvent, bool) {
	if m.Type != events.ContainerEventType || !e.owner.Owns(m.Actor.Attributes) {
		return protocol.ContainerEvent{}, false
	}
	action := string(m.Action)
	known := false
	for _, a := range eventActions {
		known = known || action == a || strings.HasPrefix(action, a+":")
	}
	if !known {
		return protocol.ContainerEvent{}, false
	}
	id := m.Actor.Attributes[policy.LabelContainer]
	if id == "" {
		id = m.Actor.Attributes["name"]
	}
	ev := protocol.ContainerEvent{
		ContainerID: id,
		Action:      action,
		Timestamp:   protocol.Timestamp(time.Unix(0, m.TimeNano)),
	}
	if code, err := strconv.Atoi(m.Actor.Attributes["exitCode"]); err == nil {
		ev.ExitCode = &code
	}
	if action == "oom" {
		oom := true
		ev.OOMKilled = &oom
	}
	return ev, true
}
