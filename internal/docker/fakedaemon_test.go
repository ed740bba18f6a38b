package docker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// fakeDaemon serves a Docker Engine API over TCP for behaviour the real
// daemon cannot be made to show on demand: hanging, restarting mid-stream.
func fakeDaemon(t *testing.T, h http.HandlerFunc) *Engine {
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
	e, err := New(Options{NodeID: "node-1", CallTimeout: 300 * time.Millisecond})
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
		"logs":    func() error { _, err := e.Logs(ctx, &protocol.Command{ContainerID: "web-1"}); return err },
		"follow": func() error {
			return e.FollowLogs(ctx, &protocol.Command{ContainerID: "web-1"}, func(string, string) error { return nil })
		},
		"stats":  func() error { _, err := e.Stats(ctx, "web-1"); return err },
		"update": func() error { _, err := e.Update(ctx, "web-1", &protocol.Resources{CPU: 1}); return err },
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

	var mu sync.Mutex
	var sinces []string
	e := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_ping" {
			w.Write([]byte("OK"))
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/events") {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		sinces = append(sinces, r.URL.Query().Get("since"))
		n := len(sinces)
		mu.Unlock()
		enc := json.NewEncoder(w)
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
	mu.Lock()
	defer mu.Unlock()
	if len(sinces) < 3 {
		t.Fatalf("subscriptions %d, want 3", len(sinces))
	}
	wantSince := unixNano(time.Unix(0, die.TimeNano))
	if sinces[1] != wantSince || sinces[2] != wantSince {
		t.Errorf("resubscribed with since %q, want %q", sinces[1:], wantSince)
	}
}
