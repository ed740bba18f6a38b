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
