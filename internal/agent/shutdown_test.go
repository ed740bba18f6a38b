package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func TestShutdownWhileSlowCommandRuns(t *testing.T) {
	release := make(chan struct{})
	rt := &agenttest.Runtime{StopFunc: func(ctx context.Context, id string, timeout *int) error {
		<-release
		return nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "slow-stop", Action: protocol.ActionStop, ContainerID: "web"})
	testsupport.WaitFor(t, "stop to run", func() bool { return rt.CallCount("Stop") == 1 })

	h.cancel() // SIGTERM
	testsupport.WaitFor(t, "shutdown to begin", func() bool {
		return len(h.logs.entries("shutting down: waiting for in-flight commands")) == 1
	})
	// New commands are refused, pings still answered.
	h.send(protocol.Command{ID: "late", Action: protocol.ActionStart, ContainerID: "db"})
	if r := h.srv.ExpectResult("late"); r.Status != protocol.StatusError || r.Code != protocol.CodeUnavailable || !strings.Contains(r.Error, "shutting down") {
		t.Errorf("command during shutdown: %+v, want unavailable", r)
	}
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)

	close(release)
	if r := h.srv.ExpectResult("slow-stop"); r.Status != protocol.StatusSuccess {
		t.Errorf("in-flight command result %+v", r)
	}
	if cl := h.srv.ExpectClose(); cl.Code != 1001 {
		t.Errorf("close code %d, want 1001", cl.Code)
	}
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v, want nil after a graceful shutdown", err)
	}
	for _, m := range []string{"Stop", "Kill", "Delete", "Restart"} {
		want := 0
		if m == "Stop" {
			want = 1
		}
		if n := rt.CallCount(m); n != want {
			t.Errorf("%s called %d times during shutdown, want %d: containers must be left alone", m, n, want)
		}
	}
	if rt.CallCount("Start") != 0 {
		t.Error("a command received during shutdown was executed")
	}
}

func TestShutdownTimeoutCancelsStuckCommand(t *testing.T) {
	rt := &agenttest.Runtime{StartFunc: func(ctx context.Context, id string) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.ShutdownTimeout = 200 * time.Millisecond }})
	h.identified()
	h.send(protocol.Command{ID: "stuck", Action: protocol.ActionStart, ContainerID: "web"})
	h.send(protocol.Command{ID: "queued", Action: protocol.ActionStart, ContainerID: "web"})
	testsupport.WaitFor(t, "start to run", func() bool { return rt.CallCount("Start") == 1 })
	h.cancel()
	for _, id := range []string{"stuck", "queued"} {
		if r := h.srv.ExpectResult(id); r.Status != protocol.StatusError {
			t.Errorf("%s: %+v, want an error after the shutdown timeout", id, r)
		}
	}
	if cl := h.srv.ExpectClose(); cl.Code != 1001 {
		t.Errorf("close code %d, want 1001", cl.Code)
	}
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if n := rt.CallCount("Start"); n != 1 {
		t.Errorf("Start ran %d times; the queued command must not start after the timeout", n)
	}
}

func TestShutdownEndsFollowStream(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
		if err := emit("stdout", "hello"); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "follow", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	h.srv.Expect(protocol.TypeLog)
	h.cancel()
	if r := h.srv.ExpectResult("follow"); r.Status != protocol.StatusSuccess {
		t.Errorf("follow result at shutdown %+v", r)
	}
	if cl := h.srv.ExpectClose(); cl.Code != 1001 {
		t.Errorf("close code %d, want 1001", cl.Code)
	}
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v", err)
	}
}
