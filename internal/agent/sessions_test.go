package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// echoSession is an interactive session that writes its input back as
// output ("resize C R" lines for resizes) until its stdin ends ({exitCode:
// 0}) or ctx ends (detached).
func echoSession(ctx context.Context, _ protocol.ExecParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, error) {
	for {
		select {
		case m := <-in:
			switch m := m.(type) {
			case protocol.Stdin:
				if m.EOF {
					code := 0
					return protocol.SessionResult{ExitCode: &code}, nil
				}
				if err := out("stdout", m.Data); err != nil {
					return protocol.SessionResult{}, err
				}
			case protocol.Resize:
				if err := out("stdout", []byte(fmt.Sprintf("resize %d %d\n", m.Cols, m.Rows))); err != nil {
					return protocol.SessionResult{}, err
				}
			}
		case <-ctx.Done():
			return protocol.SessionResult{Detached: true}, nil
		}
	}
}

func execSession(id, container string) protocol.Command {
	return protocol.Command{ID: id, Action: protocol.ActionExec, ContainerID: container,
		ConsoleOptions: protocol.ConsoleOptions{Cmd: []string{"sh"}, Stdin: true, TTY: true}}
}

// output collects the stream messages of one command until want appears.
func output(t *testing.T, h *harness, id, want string) string {
	t.Helper()
	var got bytes.Buffer
	for !strings.Contains(got.String(), want) {
		m := h.srv.Expect(protocol.TypeStream).(protocol.Stream)
		if m.CommandID != id {
			t.Fatalf("stream for %q, want %q", m.CommandID, id)
		}
		got.Write(m.Data)
	}
	return got.String()
}

// TestSessionInputBeforeStart: input that arrives while the session waits
// behind its container's earlier command is kept and delivered in order,
// with the resizes between; the session then leaves the container's queue.
func TestSessionInputBeforeStart(t *testing.T) {
	release := make(chan struct{})
	rt := &agenttest.Runtime{
		StartFunc: func(ctx context.Context, _ string) error {
			<-release
			return nil
		},
		ExecSessionFunc: echoSession,
	}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "start", Action: protocol.ActionStart, ContainerID: "web"})
	h.send(execSession("sh", "web"))
	h.send(protocol.Stdin{CommandID: "sh", Data: []byte("one\n")})
	h.send(protocol.Resize{CommandID: "sh", Cols: 80, Rows: 24})
	h.send(protocol.Stdin{CommandID: "sh", Data: []byte("two\n")})
	// Frames are handled in order: once the pong is back, the input is in,
	// before the session starts.
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	if n := rt.CallCount("ExecSession"); n != 0 {
		t.Fatalf("the session started before the container's earlier command ended (%d calls)", n)
	}
	close(release)
	h.srv.ExpectResult("start")
	if got, want := output(t, h, "sh", "two\n"), "one\nresize 80 24\ntwo\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	// The running session does not hold the container's queue.
	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "web"})
	if r := h.srv.ExpectResult("stop"); r.Status != protocol.StatusSuccess {
		t.Errorf("stop during a session: %+v", r)
	}
	h.send(protocol.Stdin{CommandID: "sh", EOF: true})
	r := h.srv.ExpectResult("sh")
	var res protocol.SessionResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess || res.ExitCode == nil || *res.ExitCode != 0 {
		t.Errorf("result %+v, want exit code 0", r)
	}
}

// TestSessionCancelDetaches: cancel ends a session within 2 s with
// {detached: true}; later input is dropped with a debug line that does not
// show it.
func TestSessionCancelDetaches(t *testing.T) {
	rt := &agenttest.Runtime{AttachFunc: func(ctx context.Context, p protocol.AttachParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, []string, error) {
		res, err := echoSession(ctx, protocol.ExecParams{}, in, out)
		return res, nil, err
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "a", Action: protocol.ActionAttach, ContainerID: "game"})
	h.send(protocol.Stdin{CommandID: "a", Data: []byte("say secret-console-text\n")})
	output(t, h, "a", "secret-console-text")
	h.send(protocol.Cancel{CommandID: "a"})
	start := time.Now()
	r := h.srv.ExpectResult("a")
	took := time.Since(start)
	var res protocol.SessionResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess || !res.Detached {
		t.Errorf("result %+v, want success with detached", r)
	}
	if took > 2*time.Second {
		t.Errorf("result came %s after the cancel, want within 2 s", took)
	}
	h.send(protocol.Stdin{CommandID: "a", Data: []byte("late-secret-input\n")})
	h.send(protocol.Stdin{CommandID: "nobody", Data: []byte("stray-secret-input\n")})
	testsupport.WaitFor(t, "the drop to be logged", func() bool {
		return len(h.logs.entries("console input dropped")) == 2
	})
	logs := h.logs.String()
	for _, s := range []string{"secret-console-text", "late-secret-input", "stray-secret-input", "c2VjcmV0", "bGF0ZS1zZWNyZXQ"} {
		if strings.Contains(logs, s) {
			t.Errorf("the agent's logs contain session data %q", s)
		}
	}
}

// TestSessionLimit: beyond MAX_SESSIONS new sessions are refused with
// unavailable; ending one frees its place.
func TestSessionLimit(t *testing.T) {
	h := start(t, &agenttest.Runtime{}, setup{opts: func(o *agent.Options) { o.MaxSessions = 2 }})
	h.identified()
	h.send(execSession("s1", "a"))
	h.send(protocol.Command{ID: "s2", Action: protocol.ActionAttach, ContainerID: "b"})
	testsupport.WaitFor(t, "two sessions", func() bool { return h.rt.CallCount("ExecSession")+h.rt.CallCount("Attach") == 2 })
	h.send(protocol.Command{ID: "s3", Action: protocol.ActionStats, ContainerID: "c", Follow: true})
	if r := h.srv.ExpectResult("s3"); r.Code != protocol.CodeUnavailable || !strings.Contains(r.Error, "MAX_SESSIONS") {
		t.Errorf("third session: %+v, want unavailable naming MAX_SESSIONS", r)
	}
	h.send(protocol.Cancel{CommandID: "s1"})
	h.srv.ExpectResult("s1")
	h.send(protocol.Command{ID: "s4", Action: protocol.ActionStats, ContainerID: "c", Follow: true})
	testsupport.WaitFor(t, "the stats session", func() bool { return h.rt.CallCount("FollowStats") == 1 })
	h.send(protocol.Cancel{CommandID: "s4"})
	var res protocol.StatsFollowResult
	r := h.srv.ExpectResult("s4")
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess {
		t.Errorf("stats after cancel: %+v", r)
	}
}

// TestSessionBusyTerminal: a session flooding output while the server reads
// slowly neither delays pongs nor another container's command, and the
// runtime's writes block once the server reads nothing (the output is
// under the connection's backpressure, not piled up in the agent).
func TestSessionBusyTerminal(t *testing.T) {
	var pushed atomic.Int64
	var inWrite atomic.Int64 // when the output call in progress began (Unix ns), 0 between calls
	rt := &agenttest.Runtime{ExecSessionFunc: func(ctx context.Context, _ protocol.ExecParams, _ <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, error) {
		chunk := bytes.Repeat([]byte("x"), 16<<10)
		for {
			inWrite.Store(time.Now().UnixNano())
			err := out("stdout", chunk)
			inWrite.Store(0)
			if err != nil {
				return protocol.SessionResult{Detached: true}, nil
			}
			pushed.Add(1)
		}
	}}
	// The socket buffers fill with output (a few MiB) that the slow server
	// reads a frame at a time; the pongs to the agent's pings wait behind
	// it. The agent must not take the slow server for a dead one.
	h := start(t, rt, setup{timing: agent.Timing{ReadTimeout: time.Minute}})
	h.identified()
	h.srv.SetReadDelay(5 * time.Millisecond)
	h.send(execSession("flood", "a"))
	h.srv.Expect(protocol.TypeStream)
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	h.send(protocol.Command{ID: "other", Action: protocol.ActionInspect, ContainerID: "b"})
	h.srv.ExpectResult("other")
	// Stop reading: the runtime's writes block once the socket buffers are
	// full. Without backpressure an output call returns at once; one that
	// has not returned for a second is blocked.
	h.srv.SetReadDelay(time.Hour)
	testsupport.WaitFor(t, "an output call blocked for a second", func() bool {
		began := inWrite.Load()
		return began != 0 && time.Since(time.Unix(0, began)) > time.Second
	})
	blocked := pushed.Load()
	// What the runtime wrote is what the server read plus what the socket
	// buffers hold: at most the largest send and receive buffers the
	// kernel grows to.
	limit := int64(len(h.srv.Received())) + (sysctlMax(t, "net/ipv4/tcp_wmem")+sysctlMax(t, "net/ipv4/tcp_rmem"))/(16<<10) + 1
	t.Logf("%d chunks of 16 KiB pushed before the writes blocked (socket buffers: at most %d)", blocked, limit)
	if blocked > limit {
		t.Errorf("the session pushed %d chunks while the server read nothing, more than the socket buffers hold (%d): output is not under backpressure", blocked, limit)
	}
	h.srv.SetReadDelay(0)
	h.send(protocol.Cancel{CommandID: "flood"})
	h.srv.ExpectResult("flood")
}

// sysctlMax is the last (largest) number of a sysctl such as tcp_wmem.
func sysctlMax(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatalf("the kernel's socket buffer bounds: %v", err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatalf("%s = %q: %v", name, b, err)
	}
	return n
}

// TestSessionConnectionLoss: a session ends when its connection is lost;
// its final result arrives after the reconnect.
func TestSessionConnectionLoss(t *testing.T) {
	rt := &agenttest.Runtime{ExecSessionFunc: echoSession}
	h := start(t, rt, setup{})
	h.identified()
	h.send(execSession("sh", "a"))
	h.send(protocol.Stdin{CommandID: "sh", Data: []byte("hi\n")})
	output(t, h, "sh", "hi\n")
	h.srv.DropConns()
	h.identified()
	r := h.srv.ExpectResult("sh")
	var res protocol.SessionResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusError || r.Code != protocol.CodeUnavailable || !res.Detached || !strings.Contains(r.Error, "connection") {
		t.Errorf("result %+v, want unavailable, detached, naming the lost connection", r)
	}
}

// TestSessionShutdown: SIGTERM ends sessions; their results go out before
// the socket closes.
func TestSessionShutdown(t *testing.T) {
	rt := &agenttest.Runtime{}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "a", Action: protocol.ActionAttach, ContainerID: "game"})
	testsupport.WaitFor(t, "the attach", func() bool { return rt.CallCount("Attach") == 1 })
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r := h.srv.ExpectResult("a")
	var res protocol.SessionResult
	resultOf(t, r, &res)
	if r.Code != protocol.CodeUnavailable || !res.Detached || !strings.Contains(r.Error, "shutting down") {
		t.Errorf("result %+v, want unavailable, detached: the agent is shutting down", r)
	}
}

// TestSessionInputBound: input the process does not read is bounded by
// bytes; the excess is dropped, counted and reported.
func TestSessionInputBound(t *testing.T) {
	release := make(chan struct{})
	rt := &agenttest.Runtime{ExecSessionFunc: func(ctx context.Context, p protocol.ExecParams, in <-chan protocol.Message, out agent.OutputFunc) (protocol.SessionResult, error) {
		<-release // the process reads nothing for a while
		return echoSession(ctx, p, in, out)
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(execSession("sh", "a"))
	chunk := bytes.Repeat([]byte("y"), 60<<10)
	for range 8 { // 480 KiB against a 256 KiB bound
		h.send(protocol.Stdin{CommandID: "sh", Data: chunk})
	}
	h.send(protocol.Stdin{CommandID: "sh", EOF: true})
	// The agent handles a connection's frames in order: once it answered
	// a ping sent after the input, all of it was queued or dropped.
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	close(release)
	r := h.srv.ExpectResult("sh")
	var res protocol.SessionResult
	resultOf(t, r, &res)
	// The queue holds 4 chunks (240 KiB); one more may be in hand.
	if d := res.InputDroppedBytes; (d != 4*60<<10 && d != 3*60<<10) || len(r.Warnings) != 1 {
		t.Fatalf("result %+v (dropped %d), want 3 or 4 chunks of input dropped and a warning", r, d)
	}
	delivered := 0
	for _, f := range h.srv.Received() {
		if m, ok := f.Msg.(protocol.Stream); ok {
			delivered += len(m.Data)
		}
	}
	if int64(delivered)+res.InputDroppedBytes != 8*60<<10 {
		t.Errorf("delivered %d + dropped %d bytes, want all %d accounted for", delivered, res.InputDroppedBytes, 8*60<<10)
	}
}

// TestSessionInputLeftAtEndIsLogged: input the process never read when it
// ended is not dropped silently: one debug line counts it, without it.
func TestSessionInputLeftAtEndIsLogged(t *testing.T) {
	release := make(chan struct{})
	rt := &agenttest.Runtime{ExecSessionFunc: func(ctx context.Context, _ protocol.ExecParams, _ <-chan protocol.Message, _ agent.OutputFunc) (protocol.SessionResult, error) {
		<-release // the process reads nothing, then exits
		code := 0
		return protocol.SessionResult{ExitCode: &code}, nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(execSession("sh", "a"))
	for _, line := range []string{"secret-one\n", "secret-two\n", "secret-three\n"} {
		h.send(protocol.Stdin{CommandID: "sh", Data: []byte(line)})
	}
	h.send(protocol.Resize{CommandID: "sh", Cols: 80, Rows: 24})
	h.send(protocol.Ping{}) // frames are handled in order: the input is queued
	h.srv.Expect(protocol.TypePong)
	close(release)
	h.srv.ExpectResult("sh")
	// The result goes out after the session stopped taking input.
	h.send(protocol.Stdin{CommandID: "sh", Data: []byte("secret-late\n")})
	testsupport.WaitFor(t, "the late input to be logged", func() bool { return len(h.logs.entries("console input dropped")) == 2 })
	dropped := h.logs.entries("console input dropped")
	if e := dropped[0]; e["messages"] != float64(4) || e["bytes"] != float64(len("secret-one\nsecret-two\nsecret-three\n")) || e["level"] != "DEBUG" {
		t.Errorf("log line %v, want a debug line counting 4 messages (3 stdin, 1 resize) and their stdin bytes", e)
	}
	if e := dropped[1]; e["reason"] != "no session with that id" {
		t.Errorf("late input: %v, want dropped as for an unknown session", e)
	}
	if logs := h.logs.String(); strings.Contains(logs, "secret") || strings.Contains(logs, "c2VjcmV0") {
		t.Errorf("the agent's logs contain session input")
	}
}

// TestRunToCompletionExecDoesNotHoldTheQueue: an exec without stdin runs
// beside later commands of its container and needs no stream.
func TestRunToCompletionExecDoesNotHoldTheQueue(t *testing.T) {
	release := make(chan struct{})
	rt := &agenttest.Runtime{ExecFunc: func(ctx context.Context, p protocol.ExecParams) (protocol.ExecResult, error) {
		<-release
		return protocol.ExecResult{ExitCode: 3, Stdout: "out", Stderr: "err"}, nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "e", Action: protocol.ActionExec, ContainerID: "a", ConsoleOptions: protocol.ConsoleOptions{Cmd: []string{"false"}}})
	testsupport.WaitFor(t, "the exec", func() bool { return rt.CallCount("Exec") == 1 })
	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "a"})
	h.srv.ExpectResult("stop")
	close(release)
	r := h.srv.ExpectResult("e")
	var res protocol.ExecResult
	resultOf(t, r, &res)
	if res.ExitCode != 3 || res.Stdout != "out" || res.Stderr != "err" {
		t.Errorf("result %+v", r)
	}
}

// Review M2: an exec result larger than a frame failed as internal. With
// a MAX_MESSAGE_BYTES below the default, the agent cuts the output by the
// exec output rule to fit and reports truncated: true.
func TestExecResultFitsTheFrame(t *testing.T) {
	big := strings.Repeat("\x00", 200<<10)
	rt := &agenttest.Runtime{ExecFunc: func(ctx context.Context, p protocol.ExecParams) (protocol.ExecResult, error) {
		return protocol.ExecResult{ExitCode: 0, Stdout: big, Stderr: "the error\n"}, nil
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxMessageBytes = 64 << 10 }})
	h.identified()
	h.send(protocol.Command{ID: "e", Action: protocol.ActionExec, ContainerID: "a", ConsoleOptions: protocol.ConsoleOptions{Cmd: []string{"cat"}}})
	f, err := h.srv.NextFrame(waitCtx(t), protocol.TypeCommandResult)
	if err != nil {
		t.Fatal(err)
	}
	r := f.Msg.(protocol.CommandResult)
	if r.Status != protocol.StatusSuccess {
		t.Fatalf("result %s %s, want success", r.Status, r.Error)
	}
	var res protocol.ExecResult
	resultOf(t, r, &res)
	if !res.Truncated || res.Stderr != "the error\n" || len(res.Stdout) == 0 || !strings.HasPrefix(big, res.Stdout) {
		t.Errorf("stdout %d bytes, stderr %q, truncated %v", len(res.Stdout), res.Stderr, res.Truncated)
	}
	if len(f.Raw) > 64<<10 {
		t.Errorf("frame of %d bytes over the 64 KiB limit", len(f.Raw))
	}
}

// TestStatsFollowGetsItsArguments: the runtime gets the stream's container
// and interval, and the agent stamps every sample with the command's id.
func TestStatsFollowGetsItsArguments(t *testing.T) {
	var got protocol.StatsParams
	rt := &agenttest.Runtime{FollowStatsFunc: func(ctx context.Context, p protocol.StatsParams, emit func(protocol.StatsSample) error) (int, error) {
		got = p
		return 1, emit(protocol.StatsSample{ContainerID: p.ContainerID, Pids: 3})
	}}
	h := start(t, rt, setup{})
	h.identified()
	interval := 2.5
	h.send(protocol.Command{ID: "st", Action: protocol.ActionStats, ContainerID: "web", Follow: true,
		ConsoleOptions: protocol.ConsoleOptions{Interval: &interval}})
	s := h.srv.Expect(protocol.TypeStats).(protocol.StatsSample)
	if s.CommandID != "st" || s.ContainerID != "web" || s.Pids != 3 {
		t.Errorf("sample %+v, want command st, container web", s)
	}
	if r := h.srv.ExpectResult("st"); r.Status != protocol.StatusSuccess {
		t.Errorf("result %+v", r)
	}
	if want := (protocol.StatsParams{ContainerID: "web", Interval: 2500 * time.Millisecond}); got != want {
		t.Errorf("FollowStats got %+v, want %+v", got, want)
	}
}
