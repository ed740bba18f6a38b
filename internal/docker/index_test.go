package docker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// fakeEngineState is the containers of a fake Docker daemon for the index
// tests: it resolves a container reference as Docker does (full id first,
// then name), records every request and streams the events it is given.
type fakeEngineState struct {
	t *testing.T

	mu         sync.Mutex
	byID       map[string]*fakeContainer
	calls      []string      // "METHOD /path" without the API version
	subscribed chan struct{} // closed at the first /events request
	subOnce    sync.Once
	events     chan events.Message
}

type fakeContainer struct {
	id, name string
	labels   map[string]string
	running  bool
}

// managedLabels are the labels of a container of node-1's agent.
func managedLabels(name string) map[string]string {
	return map[string]string{"lormas.managed": "true", "lormas.node": "node-1", "lormas.container": name}
}

func newFakeEngineState(t *testing.T) *fakeEngineState {
	return &fakeEngineState{t: t, byID: map[string]*fakeContainer{}, subscribed: make(chan struct{}), events: make(chan events.Message, 16)}
}

func (s *fakeEngineState) add(id, name string, labels map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID[id] = &fakeContainer{id: id, name: name, labels: labels, running: true}
}

func (s *fakeEngineState) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

func (s *fakeEngineState) exists(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id] != nil
}

// resolve finds a container as Docker does: by full id, then by name.
func (s *fakeEngineState) resolve(ref string) *fakeContainer {
	if c := s.byID[ref]; c != nil {
		return c
	}
	for _, c := range s.byID {
		if c.name == ref {
			return c
		}
	}
	return nil
}

// takeCalls returns the requests since the last call and forgets them.
func (s *fakeEngineState) takeCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

func (s *fakeEngineState) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if i := strings.Index(path[1:], "/"); strings.HasPrefix(path, "/v1.") && i > 0 {
		path = path[i+1:]
	}
	switch {
	case path == "/_ping":
		w.Write([]byte("OK"))
		return
	case path == "/events":
		s.subOnce.Do(func() { close(s.subscribed) })
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		enc := json.NewEncoder(w)
		for {
			select {
			case m := <-s.events:
				enc.Encode(m)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r.Method+" "+path)
	parts := strings.Split(strings.TrimPrefix(path, "/containers/"), "/")
	c := s.resolve(parts[0])
	if !strings.HasPrefix(path, "/containers/") || c == nil {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"message":"No such container: %s"}`, parts[0])
		return
	}
	op := ""
	if len(parts) > 1 {
		op = parts[1]
	}
	switch {
	case r.Method == http.MethodGet && op == "json":
		json.NewEncoder(w).Encode(map[string]any{
			"Id": c.id, "Name": "/" + c.name,
			"State":  map[string]any{"Status": map[bool]string{true: "running", false: "exited"}[c.running], "Running": c.running},
			"Config": map[string]any{"Tty": false, "Labels": c.labels},
		})
	case r.Method == http.MethodGet && op == "logs":
		line := []byte("a line of " + c.name + "\n")
		hdr := make([]byte, 8)
		hdr[0] = 1
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(line)))
		w.Write(append(hdr, line...))
	case r.Method == http.MethodPost && (op == "start" || op == "stop" || op == "kill" || op == "restart"):
		c.running = op == "start" || op == "restart"
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete && op == "":
		delete(s.byID, c.id)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && op == "stats":
		w.Write([]byte(`{"read":"2026-01-02T03:04:05Z"}`))
	case r.Method == http.MethodPost && op == "update":
		w.Write([]byte(`{"Warnings":[]}`))
	default:
		s.t.Errorf("fake daemon: unexpected %s %s", r.Method, path)
		w.WriteHeader(http.StatusNotImplemented)
	}
}

// watch runs e.Events until the test ends and waits for the subscription.
func (s *fakeEngineState) watch(t *testing.T, e *Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Events(ctx, func(protocol.ContainerEvent) {})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-s.subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("the engine did not subscribe to events")
	}
}

// event sends a container event for id with the given action and name.
func (s *fakeEngineState) event(action events.Action, id, name string, labels map[string]string) {
	attrs := map[string]string{"name": name}
	for k, v := range labels {
		attrs[k] = v
	}
	now := time.Now()
	s.events <- events.Message{Type: events.ContainerEventType, Action: action,
		Actor: events.Actor{ID: id, Attributes: attrs}, Time: now.Unix(), TimeNano: now.UnixNano()}
}

func indexEngine(t *testing.T, s *fakeEngineState, allowUnmanaged bool) *Engine {
	return fakeDaemonWith(t, Options{NodeID: "node-1", CallTimeout: 5 * time.Second, AllowUnmanaged: allowUnmanaged}, s.serve)
}

func logsOfName(ctx context.Context, e *Engine, name string) ([]string, error) {
	return e.Logs(ctx, protocol.LogsParams{ContainerID: name, Lines: protocol.DefaultLogLines})
}

func wantCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: Docker calls %q, want %q", what, got, want)
	}
}

const (
	idA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	idB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	idC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// TestIndexOneCallPerCommand: with the events stream read, the second
// command on a container is one Docker call, addressed by Docker id.
func TestIndexOneCallPerCommand(t *testing.T) {
	s := newFakeEngineState(t)
	s.add(idA, "web", managedLabels("web"))
	e := indexEngine(t, s, false)
	s.watch(t, e)
	ctx := context.Background()

	lines, err := logsOfName(ctx, e, "web")
	if err != nil || !slices.Equal(lines, []string{"a line of web"}) {
		t.Fatalf("Logs: %q, %v", lines, err)
	}
	wantCalls(t, "first logs", s.takeCalls(), "GET /containers/web/json", "GET /containers/"+idA+"/logs")
	if _, err := logsOfName(ctx, e, "web"); err != nil {
		t.Fatal(err)
	}
	wantCalls(t, "second logs", s.takeCalls(), "GET /containers/"+idA+"/logs")

	for action, call := range map[string]func() error{
		"stop":    func() error { return e.Stop(ctx, "web", intp(1)) },
		"start":   func() error { return e.Start(ctx, "web") },
		"restart": func() error { return e.Restart(ctx, "web", intp(1)) },
		"kill":    func() error { return e.Kill(ctx, "web", "SIGHUP") },
		"stats":   func() error { _, err := e.Stats(ctx, "web"); return err },
		"update":  func() error { _, err := e.Update(ctx, "web", protocol.Limits{CPU: 1}); return err },
	} {
		if err := call(); err != nil {
			t.Fatalf("%s: %v", action, err)
		}
		calls := s.takeCalls()
		if len(calls) != 1 || !strings.Contains(calls[0], "/containers/"+idA+"/") {
			t.Errorf("%s: Docker calls %q, want one, by id", action, calls)
		}
	}
	if absent, err := e.Delete(ctx, "web"); err != nil || absent {
		t.Fatalf("Delete: %v, %v", absent, err)
	}
	wantCalls(t, "delete", s.takeCalls(), "DELETE /containers/"+idA)
	if n := e.index.size(); n != 0 {
		t.Errorf("index holds %d entries after the delete", n)
	}
}

// TestIndexMissFallsBack: without an events subscription the index is not
// used: every command inspects first, as before.
func TestIndexMissFallsBack(t *testing.T) {
	s := newFakeEngineState(t)
	s.add(idA, "web", managedLabels("web"))
	e := indexEngine(t, s, false)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := logsOfName(ctx, e, "web"); err != nil {
			t.Fatal(err)
		}
		wantCalls(t, fmt.Sprintf("logs %d", i+1), s.takeCalls(), "GET /containers/web/json", "GET /containers/"+idA+"/logs")
	}
	if n := e.index.size(); n != 0 {
		t.Errorf("index holds %d entries without a subscription", n)
	}
}

// TestIndexReplacedContainerIsRechecked is the attack the index must not
// open: the managed container web is removed and someone creates an
// unmanaged container under the same name before the agent has read the
// destroy event. Every command must be refused (forbidden), and none may
// reach the new container.
func TestIndexReplacedContainerIsRechecked(t *testing.T) {
	ctx := context.Background()
	for action, call := range map[string]func(e *Engine) error{
		"logs":    func(e *Engine) error { _, err := logsOfName(ctx, e, "web"); return err },
		"start":   func(e *Engine) error { return e.Start(ctx, "web") },
		"stop":    func(e *Engine) error { return e.Stop(ctx, "web", intp(1)) },
		"restart": func(e *Engine) error { return e.Restart(ctx, "web", intp(1)) },
		"kill":    func(e *Engine) error { return e.Kill(ctx, "web", "") },
		"delete":  func(e *Engine) error { _, err := e.Delete(ctx, "web"); return err },
		"stats":   func(e *Engine) error { _, err := e.Stats(ctx, "web"); return err },
		"update":  func(e *Engine) error { _, err := e.Update(ctx, "web", protocol.Limits{CPU: 1}); return err },
	} {
		t.Run(action, func(t *testing.T) {
			s := newFakeEngineState(t)
			s.add(idA, "web", managedLabels("web"))
			e := indexEngine(t, s, false)
			s.watch(t, e)
			if _, err := logsOfName(ctx, e, "web"); err != nil { // indexes web -> idA
				t.Fatal(err)
			}
			s.remove(idA)
			s.add(idB, "web", map[string]string{"owner": "someone else"})
			s.takeCalls()

			err := call(e)
			wantCode(t, action+" on a replaced container", err, protocol.CodeForbidden)
			for _, c := range s.takeCalls() {
				if strings.Contains(c, idB) || (strings.Contains(c, "/containers/web/") && !strings.HasSuffix(c, "/containers/web/json")) {
					t.Errorf("%s reached the unmanaged container: %s", action, c)
				}
			}
			if !s.exists(idB) {
				t.Errorf("%s removed the unmanaged container", action)
			}
		})
	}
}

// TestIndexRecreatedManagedContainer: a managed container recreated under
// its name (another id) is found again after the stale entry fails.
func TestIndexRecreatedManagedContainer(t *testing.T) {
	s := newFakeEngineState(t)
	s.add(idA, "web", managedLabels("web"))
	e := indexEngine(t, s, false)
	s.watch(t, e)
	ctx := context.Background()
	if _, err := logsOfName(ctx, e, "web"); err != nil {
		t.Fatal(err)
	}
	s.remove(idA)
	s.add(idB, "web", managedLabels("web"))
	s.takeCalls()
	if _, err := logsOfName(ctx, e, "web"); err != nil {
		t.Fatalf("logs after recreation: %v", err)
	}
	wantCalls(t, "stale entry", s.takeCalls(),
		"GET /containers/"+idA+"/logs", "GET /containers/web/json", "GET /containers/"+idB+"/logs")

	// Delete of a container whose entry is stale and that is gone by name
	// too: already absent, found out by name.
	s.remove(idB)
	absent, err := e.Delete(ctx, "web")
	if err != nil || !absent {
		t.Errorf("Delete of a removed container: %v, %v; want alreadyAbsent", absent, err)
	}
}

// TestIndexFollowsEvents: destroy, rename and a create that reuses a name
// drop entries, so the next command inspects again.
func TestIndexFollowsEvents(t *testing.T) {
	s := newFakeEngineState(t)
	e := indexEngine(t, s, false)
	s.watch(t, e)
	ctx := context.Background()
	index := func(id, name string) {
		t.Helper()
		s.add(id, name, managedLabels(name))
		if _, err := logsOfName(ctx, e, name); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.index.get(name); !ok {
			t.Fatalf("%s not indexed", name)
		}
	}
	waitDropped := func(what, name string) {
		t.Helper()
		testsupport.WaitFor(t, what+": entry "+name+" dropped", func() bool {
			_, ok := e.index.get(name)
			return !ok
		})
	}

	index(idA, "web")
	s.event(events.ActionDestroy, idA, "web", managedLabels("web"))
	waitDropped("destroy", "web")

	index(idB, "db")
	s.event(events.ActionRename, idB, "db2", managedLabels("db"))
	waitDropped("rename", "db")

	index(idC, "cache")
	s.event(events.ActionCreate, idA, "cache", managedLabels("cache")) // the name now names idA
	waitDropped("create under an indexed name", "cache")

	// An unrelated event keeps the entry. Events are handled in order: once
	// a later destroy has dropped its entry, the unrelated ones were handled.
	index(idA, "api")
	index(idC, "marker")
	s.event(events.ActionStart, idA, "api", managedLabels("api"))
	s.event(events.ActionDestroy, idB, "other", managedLabels("other"))
	s.event(events.ActionDestroy, idC, "marker", managedLabels("marker"))
	waitDropped("destroy after the unrelated events", "marker")
	if _, ok := e.index.get("api"); !ok {
		t.Fatal("a start event or another container's destroy dropped the entry")
	}
}

// TestIndexNeverHoldsForeignContainers: unmanaged containers and those of
// another node are never indexed, with or without ALLOW_UNMANAGED; without
// it every command on them is refused after its own inspect.
func TestIndexNeverHoldsForeignContainers(t *testing.T) {
	ctx := context.Background()
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allowUnmanaged=%t", allow), func(t *testing.T) {
			s := newFakeEngineState(t)
			s.add(idA, "plain", map[string]string{"owner": "someone else"})
			s.add(idB, "other-node", map[string]string{"lormas.managed": "true", "lormas.node": "node-2"})
			e := indexEngine(t, s, allow)
			s.watch(t, e)
			for _, name := range []string{"plain", "other-node"} {
				for i := 0; i < 2; i++ {
					_, err := logsOfName(ctx, e, name)
					if allow {
						if err != nil {
							t.Errorf("logs %s with ALLOW_UNMANAGED: %v", name, err)
						}
					} else {
						wantCode(t, "logs of "+name, err, protocol.CodeForbidden)
					}
					calls := s.takeCalls()
					if len(calls) == 0 || calls[0] != "GET /containers/"+name+"/json" {
						t.Errorf("logs %s #%d: calls %q, want an inspect first", name, i+1, calls)
					}
				}
			}
			if n := e.index.size(); n != 0 {
				t.Errorf("index holds %d foreign containers", n)
			}
		})
	}
}

// TestIndexGenerations covers the index on its own: entries only while
// live, a lookup that raced with an invalidating event is not recorded,
// and the end of a subscription empties it.
func TestIndexGenerations(t *testing.T) {
	x := newContainerIndex()
	x.record(x.generation(), "web", indexEntry{id: idA})
	if _, ok := x.get("web"); ok {
		t.Fatal("recorded while no subscription runs")
	}
	x.subscribed(true)
	gen := x.generation()
	x.apply(events.Message{Type: events.ContainerEventType, Action: events.ActionDestroy, Actor: events.Actor{ID: idA}})
	x.record(gen, "web", indexEntry{id: idA}) // inspected before the destroy, recorded after
	if _, ok := x.get("web"); ok {
		t.Fatal("a lookup that raced with a destroy event was recorded")
	}
	x.record(x.generation(), "web", indexEntry{id: idA})
	if e, ok := x.get("web"); !ok || e.id != idA {
		t.Fatalf("get web = %+v, %v", e, ok)
	}
	// The same id under a new name (a rename the agent inspected first)
	// leaves one entry.
	x.record(x.generation(), "web2", indexEntry{id: idA})
	if _, ok := x.get("web"); ok || x.size() != 1 {
		t.Errorf("old name still indexed after the id moved (size %d)", x.size())
	}
	x.subscribed(false)
	if _, ok := x.get("web2"); ok || x.size() != 0 {
		t.Error("entries survive the end of the subscription")
	}
}
