package docker

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// fakeDaemon serves a Docker Engine API over TCP for behaviour the real
// daemon cannot be made to show on demand: hanging, restarting mid-stream.
func fakeDaemon(t *testing.T, h http.HandlerFunc) *Engine {
	t.Helper()
	return fakeDaemonWith(t, Options{NodeID: "node-1", CallTimeout: 300 * time.Millisecond}, h)
}

// eventsSubscriptions is a daemon handler that answers /_ping and, for
// each events subscription, records its since and calls serve with the
// subscription's number (from 1); other paths are 404. sinces returns the
// since of every subscription so far.
func eventsSubscriptions(serve func(n int, enc *json.Encoder, w http.ResponseWriter, r *http.Request)) (h http.HandlerFunc, sinces func() []string) {
	var mu sync.Mutex
	var got []string
	h = func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_ping" {
			w.Write([]byte("OK"))
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/events") {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		got = append(got, r.URL.Query().Get("since"))
		n := len(got)
		mu.Unlock()
		serve(n, json.NewEncoder(w), w, r)
	}
	return h, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// fakeDaemonWith is fakeDaemon with the engine's options.
func fakeDaemonWith(t *testing.T, opts Options, h http.HandlerFunc) *Engine {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		w.Header().Set("Content-Type", "application/json")
		h(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	t.Setenv("DOCKER_HOST", "tcp://"+strings.TrimPrefix(srv.URL, "http://"))
	t.Setenv("DOCKER_TLS_VERIFY", "")
	t.Setenv("DOCKER_API_VERSION", "")
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.eventsMinBackoff, e.eventsMaxBackoff = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// hang blocks a request until the client gives up. The body is read first:
// the server notices a closed connection only once it reads past the body.
func hang(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// inspectJSON is a managed container's inspect answer.
func inspectJSON(name string, running bool) string {
	state := `{"Status":"exited","Running":false}`
	if running {
		state = `{"Status":"running","Running":true}`
	}
	return `{"Id":"0123456789abcdef","Name":"/` + name + `","State":` + state + `,
"Config":{"Tty":true,"Labels":{"lormas.managed":"true","lormas.node":"node-1","lormas.container":"` + name + `"}}}`
}

// TestHungDaemonTimesOut shows that every kind of call ends with a timeout
// error when the daemon stops answering, instead of hanging.
func TestHungDaemonTimesOut(t *testing.T) {
	e := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/_ping":
			w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/containers/web-1/json"):
			w.Write([]byte(inspectJSON("web-1", true)))
		case strings.HasSuffix(r.URL.Path, "/containers/stopped-1/json"):
			w.Write([]byte(inspectJSON("stopped-1", false)))
		default:
			hang(w, r)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := map[string]func() error{
		"start":   func() error { return e.Start(ctx, "stopped-1") },
		"stop":    func() error { return e.Stop(ctx, "web-1", intp(0)) },
		"restart": func() error { return e.Restart(ctx, "web-1", intp(0)) },
		"kill":    func() error { return e.Kill(ctx, "web-1", "") },
		"delete":  func() error { _, err := e.Delete(ctx, "web-1"); return err },
		"logs":    func() error { _, err := e.Logs(ctx, logsOf(t, &protocol.Command{ContainerID: "web-1"})); return err },
		"follow": func() error {
			return e.FollowLogs(ctx, logsOf(t, &protocol.Command{ContainerID: "web-1"}), func(string, string) error { return nil })
		},
		"stats":  func() error { _, err := e.Stats(ctx, "web-1"); return err },
		"update": func() error { _, err := e.Update(ctx, "web-1", protocol.Limits{CPU: 1}); return err },
		"list":   func() error { _, err := e.List(ctx); return err },
		"info":   func() error { _, err := e.Info(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		if got := protocol.CodeOf(err); got != protocol.CodeTimeout {
			t.Errorf("%s: %v (code %q), want code timeout", name, err, got)
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the calls used up the test's safety net: a timeout is missing")
	}
}

// TestHungPingTimesOut: a daemon that accepts connections but never answers.
func TestHungPingTimesOut(t *testing.T) {
	e := fakeDaemon(t, hang)
	err := e.Start(context.Background(), "web-1")
	wantCode(t, "Start against a silent daemon", err, protocol.CodeTimeout)
	if !strings.Contains(err.Error(), "start container web-1") {
		t.Errorf("error %q does not name the action", err)
	}
}

// TestEventsResubscribe breaks the events stream and fails one resubscription:
// Events comes back with since = the last event seen and relays each event
// once.
func TestEventsResubscribe(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ev := func(action string, at time.Duration, attrs map[string]string) events.Message {
		a := map[string]string{"lormas.managed": "true", "lormas.node": "node-1", "lormas.container": "web-1", "name": "web-1"}
		for k, v := range attrs {
			a[k] = v
		}
		t := base.Add(at)
		return events.Message{Type: events.ContainerEventType, Action: events.Action(action), Actor: events.Actor{ID: "0123", Attributes: a}, Time: t.Unix(), TimeNano: t.UnixNano()}
	}
	start := ev("start", 1*time.Millisecond, nil)
	die := ev("die", 2*time.Millisecond, map[string]string{"exitCode": "1"})
	other := ev("start", 2500*time.Microsecond, map[string]string{"lormas.node": "node-2"})
	destroy := ev("destroy", 3*time.Millisecond, nil)

	handler, sinces := eventsSubscriptions(func(n int, enc *json.Encoder, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1: // two events, then the daemon "restarts"
			enc.Encode(start)
			enc.Encode(die)
		case 2: // still down
			http.Error(w, `{"message":"daemon is restarting"}`, http.StatusServiceUnavailable)
		default: // back: replays from since, including the last event seen
			enc.Encode(die)
			enc.Encode(other)
			enc.Encode(destroy)
			w.(http.Flusher).Flush()
			hang(w, r)
		}
	})
	e := fakeDaemon(t, handler)

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan protocol.ContainerEvent, 10)
	done := make(chan error, 1)
	go func() { done <- e.Events(ctx, func(ev protocol.ContainerEvent) { got <- ev }) }()
	var actions []string
	timeout := time.After(30 * time.Second)
	for len(actions) < 3 {
		select {
		case ev := <-got:
			actions = append(actions, ev.Action)
		case <-timeout:
			t.Fatalf("events so far %q", actions)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Events: %v", err)
	}
	close(got)
	for ev := range got {
		actions = append(actions, ev.Action)
	}
	if want := []string{"start", "die", "destroy"}; !slices.Equal(actions, want) {
		t.Errorf("events %q, want %q (each once, none of another node)", actions, want)
	}
	subs := sinces()
	if len(subs) < 3 {
		t.Fatalf("subscriptions %d, want 3", len(subs))
	}
	wantSince := unixNano(time.Unix(0, die.TimeNano).Add(-eventsReplayMargin))
	if subs[1] != wantSince || subs[2] != wantSince {
		t.Errorf("resubscribed with since %q, want %q", subs[1:], wantSince)
	}
}

// TestPullStreamError: the daemon answers the pull with 200 and reports the
// failure inside the progress stream. With a local copy the create goes on
// with a warning (and the kernel's warnings from create are passed on);
// without one it fails and creates nothing.
//
// The error arrives as errorDetail with error, as current daemons send it, or
// as the bare error string that older daemons and compatible engines send.
func TestPullStreamError(t *testing.T) {
	forms := []struct {
		name string
		msg  map[string]any
	}{
		{"errorDetail", map[string]any{"errorDetail": map[string]string{"message": "unexpected EOF"}, "error": "unexpected EOF"}},
		{"error only", map[string]any{"error": "unexpected EOF"}},
	}
	for _, form := range forms {
		for _, local := range []bool{true, false} {
			testPullStreamError(t, form.name, form.msg, local)
		}
	}
}

func testPullStreamError(t *testing.T, form string, errMsg map[string]any, local bool) {
	t.Run(form+"/"+map[bool]string{true: "local copy", false: "no local copy"}[local], func(t *testing.T) {
		var mu sync.Mutex
		created := false
		e := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
			p := r.URL.Path
			switch {
			case p == "/_ping":
				w.Write([]byte("OK"))
			case strings.HasSuffix(p, "/containers/web-1/json"):
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte(`{"message":"No such container: web-1"}`))
			case strings.HasSuffix(p, "/images/create"):
				enc := json.NewEncoder(w)
				enc.Encode(map[string]any{"status": "Pulling from library/app", "id": "1"})
				enc.Encode(map[string]any{"status": "Downloading", "id": "l1", "progressDetail": map[string]int{"current": 1, "total": 10}})
				enc.Encode(errMsg)
			case strings.HasSuffix(p, "/images/app:1/json"):
				if !local {
					w.WriteHeader(http.StatusNotFound)
					w.Write([]byte(`{"message":"No such image: app:1"}`))
					return
				}
				w.Write([]byte(`{"Id":"sha256:abc"}`))
			case strings.HasSuffix(p, "/containers/create"):
				mu.Lock()
				created = true
				mu.Unlock()
				w.WriteHeader(http.StatusCreated)
				w.Write([]byte(`{"Id":"c0ffee","Warnings":["Your kernel does not support swap limit capabilities."]}`))
			default:
				t.Errorf("unexpected %s %s", r.Method, p)
				http.NotFound(w, r)
			}
		})
		var progress []string
		cmd := &protocol.Command{Action: protocol.ActionCreate, ContainerID: "web-1",
			EggConfig: &protocol.EggConfig{Image: "app:1", PullPolicy: protocol.PullAlways}}
		res, warnings, err := e.Create(context.Background(), createOf(t, cmd), func(stage, detail string) { progress = append(progress, stage+": "+detail) })
		if want := []string{"pull: 1: Pulling from library/app", "pull: l1: Downloading 1/10 bytes"}; !slices.Equal(progress, want) {
			t.Errorf("progress %q, want %q", progress, want)
		}
		mu.Lock()
		defer mu.Unlock()
		if !local {
			if err == nil || !strings.Contains(err.Error(), "unexpected EOF") || !strings.Contains(err.Error(), "no local copy") {
				t.Errorf("Create: %v, want the pull's error and that no local copy exists", err)
			}
			if created {
				t.Error("the container was created without an image")
			}
			return
		}
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if res.ContainerID != "c0ffee" {
			t.Errorf("container id %q, want c0ffee", res.ContainerID)
		}
		if len(warnings) != 2 || !strings.Contains(warnings[0], "unexpected EOF") || !strings.Contains(warnings[0], "local copy") ||
			!strings.Contains(warnings[1], "swap limit") {
			t.Errorf("warnings %q, want the pull fallback and the kernel's warning", warnings)
		}
	})
}

// TestEventsOutOfOrderStamps: the daemon stamps events before publishing
// them concurrently, so an event can arrive after a later-stamped one; and
// a resubscription's replay holds events already relayed and events
// stamped before the newest one seen that never came. Every event is
// relayed once; the replay holds the last event read before the break, so
// it covered the gap and missed is not called. The reader used to skip any
// event stamped before the last one it saw.
func TestEventsOutOfOrderStamps(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ev := func(action, id, name string, at time.Duration) events.Message {
		a := map[string]string{"lormas.managed": "true", "lormas.node": "node-1", "lormas.container": name, "name": name}
		t := base.Add(at)
		return events.Message{Type: events.ContainerEventType, Action: events.Action(action),
			Actor: events.Actor{ID: id, Attributes: a}, Time: t.Unix(), TimeNano: t.UnixNano()}
	}
	startA := ev("start", "aa", "a", 3*time.Millisecond)
	dieB := ev("die", "bb", "b", 1*time.Millisecond) // stamped earlier, arrives later
	killC := ev("kill", "cc", "c", 2*time.Millisecond)
	stopD := ev("stop", "dd", "d", 2500*time.Microsecond) // lost when the stream broke
	destroyA := ev("destroy", "aa", "a", 4*time.Millisecond)

	logs := &testsupport.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	handler, sinces := eventsSubscriptions(func(n int, enc *json.Encoder, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			enc.Encode(startA)
			enc.Encode(dieB)
			enc.Encode(killC)
			return // the stream breaks
		}
		// The replay, in the daemon's buffer order, then a new event.
		enc.Encode(startA)
		enc.Encode(dieB)
		enc.Encode(stopD)
		enc.Encode(killC)
		enc.Encode(destroyA)
		w.(http.Flusher).Flush()
		hang(w, r)
	})
	e := fakeDaemonWith(t, Options{NodeID: "node-1", CallTimeout: 300 * time.Millisecond, Logger: log}, handler)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 20)
	var missed atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- e.WatchEvents(ctx, func(ev protocol.ContainerEvent) { got <- ev.Action + " " + ev.ContainerID },
			func() { missed.Add(1) })
	}()
	var relayed []string
	timeout := time.After(30 * time.Second)
	for len(relayed) < 5 {
		select {
		case s := <-got:
			relayed = append(relayed, s)
		case <-timeout:
			t.Fatalf("events so far %q", relayed)
		}
	}
	testsupport.WaitFor(t, "the replay checked", func() bool { return strings.Contains(logs.String(), "replay covered the gap") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchEvents: %v", err)
	}
	close(got)
	for s := range got {
		relayed = append(relayed, s)
	}
	want := []string{"start a", "die b", "kill c", "stop d", "destroy a"}
	if !slices.Equal(relayed, want) {
		t.Errorf("relayed %q, want %q (each once)", relayed, want)
	}
	if n := missed.Load(); n != 0 {
		t.Errorf("missed called %d times, want none: the replay held the last event read", n)
	}
	if want, subs := unixNano(base.Add(3*time.Millisecond).Add(-eventsReplayMargin)), sinces(); len(subs) != 2 || subs[1] != want {
		t.Errorf("subscriptions since %q, want the second since %s (the newest event less the margin)", subs, want)
	}
}

// TestRecentEventsBounded: the identities kept are bounded, oldest
// forgotten first.
func TestRecentEventsBounded(t *testing.T) {
	r := newRecentEvents(3)
	m := func(n int64) events.Message {
		return events.Message{Action: "start", Actor: events.Actor{ID: "x"}, TimeNano: n}
	}
	for n := int64(1); n <= 4; n++ {
		if !r.add(m(n)) {
			t.Fatalf("event %d taken for a repeat", n)
		}
	}
	if r.add(m(4)) || r.add(m(2)) {
		t.Error("a recent event not recognised")
	}
	if !r.add(m(1)) {
		t.Error("the oldest event still remembered beyond the bound")
	}
	if len(r.seen) != 3 || r.newest != 4 {
		t.Errorf("holds %d, newest %d", len(r.seen), r.newest)
	}
}
