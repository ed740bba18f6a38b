package agent_test

import (
	"context"
	"fmt"
	"slices"
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

// linesOf returns the lines a log message carries.
func linesOf(m protocol.LogMessage) []string {
	if m.Line != "" {
		return []string{m.Line}
	}
	return m.Lines
}

func TestFollowLogsUntilContainerStops(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
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
	if res.Dropped != 0 || len(res.Logs) != 0 || res.Sent != 4 {
		t.Errorf("final result %+v, want no lines, 4 sent and nothing dropped", res)
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

// numbered emits lines "%06d xxx..." (100 bytes) from first to total-1 on
// stdout as fast as emit takes them, counting the lines emit accepted,
// then follows until ctx ends (the container keeps running) unless stop.
func numbered(total int, emitted *atomic.Int64, stop bool) func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
	pad := strings.Repeat("x", 93)
	return func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
		for i := range total {
			if err := emit("stdout", fmt.Sprintf("%06d %s", i, pad)); err != nil {
				return err
			}
			emitted.Add(1)
		}
		if stop {
			return nil
		}
		<-ctx.Done()
		return nil
	}
}

// streamed is what the server received of one follow stream, in order.
type streamed struct {
	lines    []int // line numbers
	gaps     []int // gap sizes
	gapAfter []int // index into lines after which each gap came
	frames   int
}

func received(t *testing.T, srv *agenttest.Server, id string) streamed {
	t.Helper()
	var s streamed
	for _, rec := range srv.Received() {
		m, ok := rec.Msg.(protocol.LogMessage)
		if !ok || m.CommandID != id {
			continue
		}
		s.frames++
		if m.Gap > 0 {
			if m.Line != "" || len(m.Lines) > 0 {
				t.Errorf("a gap message carries lines: %+v", m)
			}
			s.gaps = append(s.gaps, m.Gap)
			s.gapAfter = append(s.gapAfter, len(s.lines))
			continue
		}
		for _, l := range linesOf(m) {
			n, err := strconv.Atoi(strings.Fields(l)[0])
			if err != nil {
				t.Fatalf("line %.20q: %v", l, err)
			}
			s.lines = append(s.lines, n)
		}
	}
	return s
}

// end is one past the last line number the stream accounts for.
func (s streamed) end() int {
	n := 0
	if len(s.lines) > 0 {
		n = s.lines[len(s.lines)-1] + 1
	}
	for i, g := range s.gaps {
		if s.gapAfter[i] == len(s.lines) {
			n += g
		}
	}
	return n
}

// accountFor checks that every line from 0 to total-1 was received exactly
// once, in order, or lies inside a gap that counts exactly the lines
// missing there; it returns the lines received and the lines in gaps.
func (s streamed) accountFor(t *testing.T, total int) (got, missing int) {
	t.Helper()
	next, g := 0, 0
	for i, n := range s.lines {
		for g < len(s.gaps) && s.gapAfter[g] == i {
			next += s.gaps[g]
			missing += s.gaps[g]
			g++
		}
		if n != next {
			t.Fatalf("line %d received where %d was due (lines lost without a gap, repeated or out of order)", n, next)
		}
		next++
	}
	for ; g < len(s.gaps); g++ {
		next += s.gaps[g]
		missing += s.gaps[g]
	}
	if next != total {
		t.Fatalf("lines and gaps account for %d lines, want %d", next, total)
	}
	return len(s.lines), missing
}

// TestFollowLogsSlowServerDropsOldestWithGaps: the container writes 15 MB
// while the server reads almost nothing. The engine reader is never held
// up (every line is read while the server stalls); the buffer keeps the
// newest lines within its bytes and drops the oldest, and every line is
// either received once, in order, or counted in the gap message at its
// place; the final result's dropped is the sum of the gaps.
func TestFollowLogsSlowServerDropsOldestWithGaps(t *testing.T) {
	const total = 150000
	var emitted atomic.Int64
	rt := &agenttest.Runtime{FollowLogsFunc: numbered(total, &emitted, true)}
	h := start(t, rt, setup{
		opts:   func(o *agent.Options) { o.LogStreamBuffer = 1 << 20 },
		timing: agent.Timing{ReadTimeout: time.Minute, WriteTimeout: time.Minute},
	})
	h.identified()
	h.srv.SetReadDelay(time.Hour) // the server stops reading after the next frame
	h.send(protocol.Command{ID: "flood", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	// Old code: the reader stalled here behind the server (backpressure),
	// and the engine's log rotation then lost lines that nobody counted.
	testsupport.WaitFor(t, "the engine reader to read every line while the server stalls", func() bool { return emitted.Load() == total })
	h.srv.SetReadDelay(0)
	r := h.srv.ExpectResult("flood")
	var res protocol.LogsResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess {
		t.Fatalf("result %+v", r)
	}
	s := received(t, h.srv, "flood")
	got, missing := s.accountFor(t, total)
	if missing == 0 || len(s.gaps) == 0 {
		t.Fatalf("no gap although 15 MB went through a 1 MiB buffer to a server that read nothing")
	}
	if res.Dropped != missing || res.Sent != got {
		t.Errorf("result dropped %d, sent %d; gaps in the stream %d, lines received %d", res.Dropped, res.Sent, missing, got)
	}
	if last := s.lines[len(s.lines)-1]; last != total-1 {
		t.Errorf("last line received %d, want %d: the newest lines are kept", last, total-1)
	}
	t.Logf("%d lines received in %d messages, %d in %d gaps", got, s.frames, missing, len(s.gaps))
}

// TestFollowLogsEveryLineOnceWhenBufferSuffices: a server that keeps up (or
// a buffer that holds the burst) gets every line exactly once, in order,
// with no gap and nothing dropped.
func TestFollowLogsEveryLineOnceWhenBufferSuffices(t *testing.T) {
	const total = 150000
	var emitted atomic.Int64
	rt := &agenttest.Runtime{FollowLogsFunc: numbered(total, &emitted, true)}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.LogStreamBuffer = 32 << 20 }})
	h.identified()
	h.send(protocol.Command{ID: "burst", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	r := h.srv.ExpectResult("burst")
	var res protocol.LogsResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess || res.Dropped != 0 || res.Sent != total {
		t.Fatalf("result %+v (%+v), want success with every line sent and nothing dropped", r, res)
	}
	s := received(t, h.srv, "burst")
	if got, missing := s.accountFor(t, total); got != total || missing != 0 {
		t.Errorf("received %d lines and %d in gaps, want all %d", got, missing, total)
	}
}

// TestFollowLogsCancelMidFlood: a cancel ends the stream at once while the
// container floods and the server lags: the engine reader stops, the result
// is a success and counts as dropped exactly the lines read and not sent.
func TestFollowLogsCancelMidFlood(t *testing.T) {
	var emitted atomic.Int64
	stopped := make(chan struct{})
	flood := numbered(1<<30, &emitted, false)
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
		defer close(stopped)
		return flood(ctx, p, func(stream, line string) error {
			if emitted.Load()%1000 == 0 {
				time.Sleep(time.Millisecond) // a container's pace, not a busy loop
			}
			return emit(stream, line)
		})
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.LogStreamBuffer = 1 << 20 }})
	h.identified()
	h.srv.SetReadDelay(20 * time.Millisecond)
	h.send(protocol.Command{ID: "f", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	testsupport.WaitFor(t, "the flood to overrun the buffer", func() bool { return emitted.Load() > 50000 })
	h.send(protocol.Cancel{CommandID: "f"})
	select {
	case <-stopped:
	case <-time.After(agenttest.DefaultWait):
		t.Fatal("the engine stream was not stopped by cancel")
	}
	h.srv.SetReadDelay(0)
	r := h.srv.ExpectResult("f")
	var res protocol.LogsResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusSuccess {
		t.Fatalf("result after cancel %+v, want success", r)
	}
	total := int(emitted.Load())
	s := received(t, h.srv, "f")
	got, missing := s.accountFor(t, s.end())
	// Lines still buffered at the cancel were never sent: dropped counts
	// them with the gaps.
	if got != res.Sent || res.Sent+res.Dropped != total || res.Dropped < missing {
		t.Errorf("read %d, received %d, gaps %d, result sent %d dropped %d: want received = sent, sent + dropped = read",
			total, got, missing, res.Sent, res.Dropped)
	}
	t.Logf("read %d, received %d, gaps %d, dropped %d", total, got, missing, res.Dropped)
}

// TestFollowLogsConnectionLostMidFlood: the connection drops while the
// container floods; the stream ends, and its result, with its counts, is
// delivered on the next connection.
func TestFollowLogsConnectionLostMidFlood(t *testing.T) {
	var emitted atomic.Int64
	flood := numbered(1<<30, &emitted, false)
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
		return flood(ctx, p, func(stream, line string) error {
			if emitted.Load()%1000 == 0 {
				time.Sleep(time.Millisecond)
			}
			return emit(stream, line)
		})
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.LogStreamBuffer = 1 << 20 }})
	h.identified()
	h.srv.SetReadDelay(20 * time.Millisecond)
	h.send(protocol.Command{ID: "f", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	testsupport.WaitFor(t, "the flood to overrun the buffer", func() bool { return emitted.Load() > 50000 })
	h.srv.DropConns()
	h.srv.SetReadDelay(0)
	h.identified()
	r := h.srv.ExpectResult("f")
	var res protocol.LogsResult
	resultOf(t, r, &res)
	if r.Status != protocol.StatusError || r.Code != protocol.CodeUnavailable || !strings.Contains(r.Error, "connection") {
		t.Errorf("result %+v, want unavailable: the stream's connection was lost", r)
	}
	for _, rec := range h.srv.Received() {
		if res, ok := rec.Msg.(protocol.CommandResult); ok && res.CommandID == "f" && rec.Conn != 2 {
			t.Errorf("the result arrived on connection %d, want 2 (after the reconnect)", rec.Conn)
		}
	}
	s := received(t, h.srv, "f")
	got, _ := s.accountFor(t, s.end())
	total := int(emitted.Load())
	// Frames in flight when the socket died are lost with it: the result
	// tells them (sent but not received), and the lines never sent.
	if res.Dropped == 0 || res.Sent+res.Dropped != total || got > res.Sent {
		t.Errorf("read %d, received %d, result sent %d dropped %d: want sent + dropped = read, received <= sent",
			total, got, res.Sent, res.Dropped)
	}
	t.Logf("read %d, sent %d (received %d, lost in transit %d), dropped %d", total, res.Sent, got, res.Sent-got, res.Dropped)
}

func TestFollowLogsCancel(t *testing.T) {
	stopped := make(chan error, 1)
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
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
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
		<-ctx.Done() // follows until cancelled
		return nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "follow", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	testsupport.WaitFor(t, "the stream to start", func() bool { return rt.CallCount("FollowLogs") == 1 })
	h.send(protocol.Command{ID: "stop", Action: protocol.ActionStop, ContainerID: "web"})
	if r := h.srv.ExpectResult("stop"); r.Status != protocol.StatusSuccess {
		t.Errorf("stop while following: %+v", r)
	}
	h.send(protocol.Cancel{CommandID: "follow"})
	h.srv.ExpectResult("follow")
}

func TestFollowInterruptedByDisconnect(t *testing.T) {
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
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
		FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
			pad := strings.Repeat("z", 1000)
			for {
				if err := emit("stdout", pad); err != nil {
					return err
				}
				if emitted.Add(1)%1000 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		},
	}
	rec := &recorder{}
	h := start(t, rt, setup{
		opts:   func(o *agent.Options) { o.Observer = rec },
		timing: agent.Timing{ReadTimeout: time.Minute, WriteTimeout: time.Minute},
	})
	h.identified()
	h.srv.SetReadDelay(time.Hour)
	h.send(protocol.Command{ID: "flood", Action: protocol.ActionLogs, ContainerID: "web", Follow: true})
	// Wait until the socket is full: the stream's sender is stuck in a
	// write (it writes no more lines) while the container goes on.
	last, still := -1, 0
	for still < 10 {
		time.Sleep(50 * time.Millisecond)
		rec.mu.Lock()
		n := rec.lines
		rec.mu.Unlock()
		if n == last && n > 0 {
			still++
		} else {
			last, still = n, 0
		}
	}
	if emitted.Load() <= int64(last) {
		t.Fatalf("%d lines read, %d written: the engine reader waited for the server", emitted.Load(), last)
	}
	h.send(protocol.Command{ID: "precious", Action: protocol.ActionStart, ContainerID: "db"})
	testsupport.WaitFor(t, "start to run", func() bool { return rt.CallCount("Start") == 1 })
	testsupport.WaitFor(t, "its result queued", func() bool { return agent.OutboxLen(h.agent) >= 1 })
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
	rt := &agenttest.Runtime{FollowLogsFunc: func(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
		return emit("stdout", "hello")
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxMessageBytes = 1200 }})
	h.identified()
	// 256 '<' (the longest id allowed) are 256 bytes in the server's frame
	// but 1536 once the agent escapes them as \u003c.
	id := strings.Repeat("<", protocol.MaxCommandIDLength)
	h.sendRaw(`{"type":"command","id":"` + id + `","action":"logs","containerId":"web","follow":true}`)
	testsupport.WaitFor(t, "the stream to end", func() bool { return rt.CallCount("FollowLogs") == 1 && agent.OutboxLen(h.agent) == 0 })
	h.send(protocol.Command{ID: "after", Action: protocol.ActionStart, ContainerID: "web"})
	if r := h.srv.ExpectResult("after"); r.Status != protocol.StatusSuccess {
		t.Errorf("result %+v, want success: the agent must keep serving", r)
	}
	if n := h.srv.Count(protocol.TypeLog); n != 0 {
		t.Errorf("%d log messages over the limit were sent", n)
	}
}
