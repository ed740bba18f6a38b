package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// eventsDaemon plays the Docker daemon's events API the way the real one
// works (daemon/events in moby): it keeps its last 256 events in the order
// it published them; a subscription with since first gets the buffered
// events, walked back from the newest to the first one stamped before
// since, then the live ones. While down, every stream is cut and every
// request refused; a restart also empties the buffer.
type eventsDaemon struct {
	mu     sync.Mutex
	buf    []events.Message
	subs   map[chan events.Message]bool
	down   bool
	cut    chan struct{} // closed when the daemon goes down
	ping   chan struct{} // when not nil, pings wait until it is closed
	sinces []string
}

const eventsDaemonBuffer = 256 // moby's eventsLimit

func newEventsDaemon() *eventsDaemon {
	return &eventsDaemon{subs: map[chan events.Message]bool{}, cut: make(chan struct{})}
}

func (d *eventsDaemon) handle(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	down, cut, ping := d.down, d.cut, d.ping
	d.mu.Unlock()
	if down {
		http.Error(w, `{"message":"daemon is down"}`, http.StatusServiceUnavailable)
		return
	}
	switch {
	case r.URL.Path == "/_ping":
		if ping != nil {
			select {
			case <-ping:
			case <-r.Context().Done():
				return
			}
		}
		w.Write([]byte("OK"))
		return
	case !strings.HasSuffix(r.URL.Path, "/events"):
		http.NotFound(w, r)
		return
	}
	since := r.URL.Query().Get("since")
	var sinceNano int64
	if sec, nsec, ok := strings.Cut(since, "."); ok {
		var s, n int64
		fmt.Sscan(sec, &s)
		fmt.Sscan(nsec, &n)
		sinceNano = s*int64(time.Second) + n
	}
	ch := make(chan events.Message, 1024)
	d.mu.Lock()
	d.sinces = append(d.sinces, since)
	var replay []events.Message
	for i := len(d.buf) - 1; i >= 0 && since != ""; i-- {
		if d.buf[i].TimeNano < sinceNano {
			break
		}
		replay = append([]events.Message{d.buf[i]}, replay...)
	}
	d.subs[ch] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.subs, ch)
		d.mu.Unlock()
	}()
	enc := json.NewEncoder(w)
	for _, m := range replay {
		enc.Encode(m)
	}
	w.(http.Flusher).Flush()
	for {
		select {
		case m := <-ch:
			enc.Encode(m)
			w.(http.Flusher).Flush()
		case <-cut:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// publish records m and sends it to every subscriber.
func (d *eventsDaemon) publish(m events.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.buf) == eventsDaemonBuffer {
		d.buf = append(d.buf[:0], d.buf[1:]...)
	}
	d.buf = append(d.buf, m)
	for ch := range d.subs {
		ch <- m
	}
}

// stop makes the daemon unreachable: streams end, requests are refused.
func (d *eventsDaemon) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = true
	close(d.cut)
	d.cut = make(chan struct{})
}

// start brings it back; restarted: with an empty buffer.
func (d *eventsDaemon) start(restarted bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = false
	if restarted {
		d.buf = nil
	}
}

func (d *eventsDaemon) subscriptions() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sinces)
}

// managedEvent is an event of the managed container name of node-1.
func managedEvent(action, name string, at time.Time) events.Message {
	a := map[string]string{"lormas.managed": "true", "lormas.node": "node-1", "lormas.container": name, "name": name}
	return events.Message{Type: events.ContainerEventType, Action: events.Action(action),
		Actor: events.Actor{ID: "id-" + name, Attributes: a}, Time: at.Unix(), TimeNano: at.UnixNano()}
}

// watchFake runs WatchEvents against d until the test ends, collecting
// what it relays and how often it reports a gap.
type watchFake struct {
	mu      sync.Mutex
	relayed []string
	missed  atomic.Int32
	logs    *testsupport.Buffer
}

func startWatch(t *testing.T, d *eventsDaemon) *watchFake {
	t.Helper()
	w := &watchFake{logs: &testsupport.Buffer{}}
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := fakeDaemonWith(t, Options{NodeID: "node-1", CallTimeout: 5 * time.Second, Logger: log}, d.handle)
	e.eventsReplayWait = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.WatchEvents(ctx, func(ev protocol.ContainerEvent) {
			w.mu.Lock()
			w.relayed = append(w.relayed, ev.Action+" "+ev.ContainerID)
			w.mu.Unlock()
		}, func() { w.missed.Add(1) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchEvents: %v", err)
		}
	})
	return w
}

func (w *watchFake) got() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.relayed)
}

// waitRelayed waits until n events were relayed.
func (w *watchFake) waitRelayed(t *testing.T, n int) {
	t.Helper()
	testsupport.WaitFor(t, fmt.Sprintf("%d events relayed", n), func() bool { return len(w.got()) >= n })
}

// TestEventsReplayCoversOutage: events that happen while the daemon is
// unreachable, and after it is back but before the stream is resubscribed,
// are relayed once it resumes, from the daemon's own buffer (since the last
// event seen, less a margin), each once; no inventory is asked for, since
// the replay reached back to the last event read before the break.
func TestEventsReplayCoversOutage(t *testing.T) {
	d := newEventsDaemon()
	w := startWatch(t, d)
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

	testsupport.WaitFor(t, "the first subscription", func() bool { return d.subscriptions() == 1 })
	d.publish(managedEvent("start", "a", at(1)))
	d.publish(managedEvent("start", "b", at(2)))
	w.waitRelayed(t, 2)

	d.stop()
	// While the stream is down: the daemon (still running its containers)
	// records events the agent cannot read.
	d.publish(managedEvent("die", "a", at(3)))
	d.publish(managedEvent("stop", "a", at(4)))
	subs := d.subscriptions()
	pinged := make(chan struct{})
	d.mu.Lock()
	d.ping = pinged
	d.mu.Unlock()
	d.start(false)
	d.publish(managedEvent("kill", "b", at(5))) // back, not yet resubscribed
	close(pinged)
	testsupport.WaitFor(t, "the resubscription", func() bool { return d.subscriptions() > subs })
	d.publish(managedEvent("die", "b", at(6))) // live
	w.waitRelayed(t, 6)
	testsupport.WaitFor(t, "the replay checked", func() bool { return strings.Contains(w.logs.String(), "replay covered the gap") })

	if want := []string{"start a", "start b", "die a", "stop a", "kill b", "die b"}; !slices.Equal(w.got(), want) {
		t.Errorf("relayed %q, want %q (each once)", w.got(), want)
	}
	if n := w.missed.Load(); n != 0 {
		t.Errorf("missed called %d times: the replay covered the gap, no inventory is needed", n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if want := unixNano(at(2).Add(-eventsReplayMargin)); d.sinces[len(d.sinces)-1] != want {
		t.Errorf("resubscribed since %s, want %s (the newest event seen less the margin)", d.sinces[len(d.sinces)-1], want)
	}
}

// TestEventsGapBeyondBuffer: when the replay cannot reach back to the last
// event read (the daemon restarted and kept nothing, or more happened
// than its 256 events), missed is called once, so the caller reconciles
// with an inventory; what the replay holds is still relayed.
func TestEventsGapBeyondBuffer(t *testing.T) {
	for _, restarted := range []bool{true, false} {
		name := map[bool]string{true: "daemon restarted", false: "buffer overrun"}[restarted]
		t.Run(name, func(t *testing.T) {
			d := newEventsDaemon()
			w := startWatch(t, d)
			base := time.Now()
			at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
			testsupport.WaitFor(t, "the first subscription", func() bool { return d.subscriptions() == 1 })
			d.publish(managedEvent("start", "a", at(1)))
			w.waitRelayed(t, 1)

			d.stop()
			want := []string{"start a"}
			if !restarted {
				// Another node's containers fill the daemon's buffer.
				for i := range eventsDaemonBuffer {
					m := managedEvent("start", fmt.Sprint("other", i), at(2+i))
					m.Actor.Attributes["lormas.node"] = "node-2"
					d.publish(m)
				}
				d.publish(managedEvent("die", "a", at(1000)))
				want = append(want, "die a")
			}
			d.start(restarted)
			w.waitRelayed(t, len(want))
			testsupport.WaitFor(t, "missed", func() bool { return w.missed.Load() > 0 })
			d.publish(managedEvent("destroy", "a", at(2000)))
			want = append(want, "destroy a")
			w.waitRelayed(t, len(want))
			if !slices.Equal(w.got(), want) {
				t.Errorf("relayed %q, want %q", w.got(), want)
			}
			if n := w.missed.Load(); n != 1 {
				t.Errorf("missed called %d times, want once", n)
			}
		})
	}
}
