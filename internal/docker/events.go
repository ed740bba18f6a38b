package docker

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// eventActions are the container actions relayed as container_event.
// health_status arrives as "health_status: healthy" and is relayed whole.
var eventActions = []string{"start", "die", "oom", "stop", "kill", "restart", "destroy", "health_status"}

// eventsStableAfter is how long a subscription must have lasted for the next
// failure to start again from the shortest backoff.
const eventsStableAfter = 10 * time.Second

// Events calls emit for each relayed event of a container this agent manages,
// until ctx ends (then it returns nil). When the stream breaks (the daemon
// restarted or is down) it subscribes again with a capped, jittered backoff,
// asking for the events since the last one seen, so none is lost or repeated.
func (e *Engine) Events(ctx context.Context, emit func(protocol.ContainerEvent)) error {
	since := time.Now()
	var last eventKey
	backoff := e.eventsMinBackoff
	failures := 0
	for {
		started := time.Now()
		err := e.subscribe(ctx, since, &last, emit)
		if ctx.Err() != nil {
			return nil
		}
		if !last.time.IsZero() {
			since = last.time
		}
		if time.Since(started) >= eventsStableAfter {
			backoff, failures = e.eventsMinBackoff, 0
		}
		failures++
		// The first failure of a streak is worth a warning; the retries of a
		// daemon that stays down only at debug level.
		if failures == 1 {
			e.log.Warn("docker events stream ended, resubscribing", "err", err)
		} else {
			e.log.Debug("docker events resubscribe failed", "err", err, "attempt", failures)
		}
		wait := time.Duration(rand.Int64N(int64(backoff) + 1))
		backoff = min(backoff*2, e.eventsMaxBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// eventKey identifies the last relayed event, to skip it when a resubscription
// with since=its time delivers it again.
type eventKey struct {
	time   time.Time
	id     string
	action string
}

// subscribe relays events from one subscription until it fails.
func (e *Engine) subscribe(ctx context.Context, since time.Time, last *eventKey, emit func(protocol.ContainerEvent)) error {
	if err := e.ready(ctx, "subscribe to docker events"); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the client's goroutine
	// The container index is current only while this subscription runs;
	// the daemon replays the events since the last one seen, so none that
	// could make an entry stale is missed from here on.
	e.index.subscribed(true)
	defer e.index.subscribed(false)
	msgs, errs := e.cli.Events(ctx, events.ListOptions{
		Since: unixNano(since),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("label", policy.LabelManaged+"="+policy.ManagedValue),
		),
	})
	for {
		select {
		case err := <-errs:
			return err
		case m := <-msgs:
			e.index.apply(m)
			t := time.Unix(0, m.TimeNano)
			key := eventKey{time: t, id: m.Actor.ID, action: string(m.Action)}
			if t.Before(last.time) || key == *last {
				continue
			}
			*last = key
			if ev, ok := e.containerEvent(m); ok {
				emit(ev)
			}
		}
	}
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
