package agent_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// linesOf returns the lines a log message carries.
func linesOf(m protocol.LogMessage) []string {
	if m.Line != "" {
		return []string{m.Line}
	}
	return m.Lines
}

func TestFollowLogsUntilContainerStops(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
		for _, l := range [][2]string{{"stdout", "one"}, {"stdout", ""}, {"stderr", "warn"}, {"stdout", "two"}} {
			if err := emit(l[0], l[1]); err != nil {
				return err
			}
		}
		return nil // the container stopped
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "f1", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	r := h.srv.ExpectResult("f1")
	if r.Status != protocol.StatusSuccess {
		t.Fatalf("result %+v", r)
	}
	var res protocol.LogsResult
	resultOf(t, r, &res)
	if res.Dropped != 0 || len(res.Logs) != 0 {
		t.Errorf("final result %+v, want no lines and nothing dropped", res)
	}
	var got []string
	for _, rec := range h.srv.Received() {
		if m, ok := rec.Msg.(protocol.LogMessage); ok {
			if m.CommandID != "f1" || m.ContainerID != "web" {
				t.Errorf("log message %+v for the wrong command", m)
			}
			if _, err := time.Parse(time.RFC3339, m.Timestamp); err != nil {
				t.Errorf("timestamp %q: %v", m.Timestamp, err)
			}
			for _, l := range linesOf(m) {
				got = append(got, m.Stream+":"+l)
			}
		}
	}
	if want := []string{"stdout:one", "stdout:", "stderr:warn", "stdout:two"}; !slices.Equal(got, want) {
		t.Errorf("streamed %q, want %q", got, want)
	}
}

func TestFollowLogsBackpressureLosesNothing(t *testing.T) {
	const total = 150000
	var emitted atomic.Int64
	pad := strings.Repeat("x", 90)
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
		for i := 0; i < total; i++ {
			if err := emit("stdout", fmt.Sprintf("%06d %s", i, pad)); err != nil {
				return err
			}
			emitted.Add(1)
		}
		return nil
	}}
	h := start(t, rt, setup{timing: agent.Timing{ReadTimeout: time.Minute, WriteTimeout: time.Minute}})
	h.identified()
	h.srv.SetReadDelay(time.Hour) // the server stops reading after the next frame
	h.send(protocol.Command{ID: "flood", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})

	// The engine reader must stall: emit blocks instead of buffering 15 MB.
	last, still := int64(-1), 0
	for still < 10 {
		time.Sleep(50 * time.Millisecond)
		n := emitted.Load()
		if n == total {
			t.Fatalf("all %d lines were read while the server read nothing: no backpressure", total)
		}
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	t.Logf("the engine reader stalled after %d of %d lines", last, total)

	h.srv.SetReadDelay(0)
	r := h.srv.ExpectResult("flood")
	var res protocol.LogsResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess || res.Dropped != 0 {
		t.Fatalf("result %+v (dropped %d), want success with nothing dropped", r, res.Dropped)
	}
	next := 0
	frames := 0
	for _, rec := range h.srv.Received() {
		m, ok := rec.Msg.(protocol.LogMessage)
		if !ok {
			continue
		}
		frames++
		for _, l := range linesOf(m) {
			if want := fmt.Sprintf("%06d ", next); !strings.HasPrefix(l, want) {
				t.Fatalf("line %d is %.10q: lines lost or out of order", next, l)
			}
			next++
		}
	}
	if next != total {
		t.Fatalf("server got %d lines, want %d", next, total)
	}
	t.Logf("%d lines in %d log messages", total, frames)
}

func TestFollowLogsCancel(t *testing.T) {
	stopped := make(chan error, 1)
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
		for i := 0; ; i++ {
			if err := emit("stdout", fmt.Sprint("tick ", i)); err != nil {
				stopped <- err
				return err
			}
			select {
			case <-ctx.Done():
				stopped <- ctx.Err()
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "f", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	h.srv.Expect(protocol.TypeLog)
	h.srv.Expect(protocol.TypeLog)
	h.send(protocol.Cancel{CommandID: "f"})
	if r := h.srv.ExpectResult("f"); r.Status != protocol.StatusSuccess {
		t.Errorf("result after cancel %+v, want success", r)
	}
	select {
	case <-stopped:
	case <-time.After(agenttest.DefaultWait):
		t.Fatal("the engine stream was not stopped by cancel")
	}
}

func TestFollowDoesNotBlockItsContainer(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
		<-ctx.Done() // follows until cancelled
		return nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "follow", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	eventually(t, "the stream to start", func() bool { return rt.CallCount("FollowLogs") == 1 })
	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "web"})
	if r := h.srv.ExpectResult("stop"); r.Status != protocol.StatusSuccess {
		t.Errorf("stop while following: %+v", r)
	}
	h.send(protocol.Cancel{CommandID: "follow"})
	h.srv.ExpectResult("follow")
}

func TestFollowInterruptedByDisconnect(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
		for {
			if err := emit("stdout", "line"); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "f", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	h.srv.Expect(protocol.TypeLog)
	h.srv.DropConns()
	h.identified()
	r := h.srv.ExpectResult("f")
	if r.Status != protocol.StatusError || r.Code != protocol.CodeUnavailable || !strings.Contains(r.Error, "connection") {
		t.Errorf("result %+v, want unavailable: the stream's connection was lost", r)
	}
}

// A result whose write had not completed when the connection died is not
// lost: it stays in the outbox and goes out on the next connection.
func TestResultStuckInWritesIsResentAfterReconnect(t *testing.T) {
	var emitted atomic.Int64
	rt := &agenttest.Runtime{
		FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
			pad := strings.Repeat("z", 1000)
			for {
				if err := emit("stdout", pad); err != nil {
					return err
				}
				emitted.Add(1)
			}
		},
	}
	h := start(t, rt, setup{timing: agent.Timing{ReadTimeout: time.Minute, WriteTimeout: time.Minute}})
	h.identified()
	h.srv.SetReadDelay(time.Hour)
	h.send(protocol.Command{ID: "flood", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	// Wait until the flood has filled the socket: the stream stalls.
	last, still := int64(-1), 0
	for still < 10 {
		time.Sleep(30 * time.Millisecond)
		if n := emitted.Load(); n == last && n > 0 {
			still++
		} else {
			last, still = n, 0
		}
	}
	h.send(protocol.Command{ID: "precious", Action: protocol.ActionStart, ContainerID: "db"})
	eventually(t, "start to run", func() bool { return rt.CallCount("Start") == 1 })
	eventually(t, "its result queued", func() bool { return agent.OutboxLen(h.agent) >= 1 })
	h.srv.DropConns()
	h.srv.SetReadDelay(0)
	h.identified()
	if r := h.srv.ExpectResult("precious"); r.Status != protocol.StatusSuccess {
		t.Errorf("result %+v", r)
	}
	for _, rec := range h.srv.Received() {
		if res, ok := rec.Msg.(protocol.CommandResult); ok && res.CommandID == "precious" && rec.Conn != 2 {
			t.Errorf("the result arrived on connection %d, want 2 (after the reconnect)", rec.Conn)
		}
	}
	if n := rt.CallCount("Start"); n != 1 {
		t.Errorf("Start ran %d times", n)
	}
}

// A command id whose JSON escaping alone makes every log message exceed the
// frame limit must not send the agent into endless clipping (a stack
// overflow kills the process): the lines are dropped and the agent serves on.
func TestFollowLogsEnvelopeOverLimitDropsLines(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
		return emit("stdout", "hello")
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxMessageBytes = 1200 }})
	h.identified()
	// 256 '<' (the longest id allowed) are 256 bytes in the server's frame
	// but 1536 once the agent escapes them as \u003c.
	id := strings.Repeat("<", protocol.MaxCommandIDLength)
	h.sendRaw(`{"type":"command","id":"` + id + `","action":"logs","containerId":"web","follow":true}`)
	eventually(t, "the stream to end", func() bool { return rt.CallCount("FollowLogs") == 1 && agent.OutboxLen(h.agent) == 0 })
	h.send(protocol.Command{ID: "after", Action: protocol.ActionStart, ContainerID: "web"})
	if r := h.srv.ExpectResult("after"); r.Status != protocol.StatusSuccess {
		t.Errorf("result %+v, want success: the agent must keep serving", r)
	}
	if n := h.srv.Count(protocol.TypeLog); n != 0 {
		t.Errorf("%d log messages over the limit were sent", n)
	}
}
