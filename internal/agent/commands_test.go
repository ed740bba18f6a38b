package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func TestPerContainerOrderingAndGlobalLimit(t *testing.T) {
	var (
		mu        sync.Mutex
		active    int
		maxActive int
		busy      = map[string]bool{}
		order     = map[string][]string{}
		overlap   []string
	)
	// Each command asks for a different number of lines: the runtime tells
	// them apart by it.
	rt := &agenttest.Runtime{LogsFunc: func(ctx context.Context, p protocol.LogsParams) ([]string, error) {
		id := fmt.Sprintf("%s-%d", p.ContainerID, p.Lines-1)
		mu.Lock()
		active++
		maxActive = max(maxActive, active)
		if busy[p.ContainerID] {
			overlap = append(overlap, id)
		}
		busy[p.ContainerID] = true
		order[p.ContainerID] = append(order[p.ContainerID], id)
		mu.Unlock()
		time.Sleep(15 * time.Millisecond)
		mu.Lock()
		active--
		busy[p.ContainerID] = false
		mu.Unlock()
		return []string{id}, nil
	}}
	h := start(t, rt, setup{opts: func(o *agent.Options) { o.MaxConcurrentCommands = 2 }})
	h.identified()
	containers := []string{"c1", "c2", "c3", "c4"}
	const perContainer = 4
	for i := 0; i < perContainer; i++ {
		for _, c := range containers {
			h.send(protocol.Command{ID: fmt.Sprintf("%s-%d", c, i), Action: protocol.ActionLogs, ContainerID: c, Lines: intp(i + 1)})
		}
	}
	for i := 0; i < perContainer; i++ {
		for _, c := range containers {
			id := fmt.Sprintf("%s-%d", c, i)
			r := h.srv.ExpectResult(id)
			var logs protocol.LogsResult
			resultOf(t, r, &logs)
			if r.Status != protocol.StatusSuccess || !slices.Equal(logs.Logs, []string{id}) {
				t.Errorf("%s: result %+v", id, r)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxActive != 2 {
		t.Errorf("at most %d commands ran at once, want exactly the limit 2 (parallel across containers, never more)", maxActive)
	}
	if len(overlap) > 0 {
		t.Errorf("commands %v ran while another command for the same container was running", overlap)
	}
	for _, c := range containers {
		want := []string{c + "-0", c + "-1", c + "-2", c + "-3"}
		if !slices.Equal(order[c], want) {
			t.Errorf("container %s ran %v, want arrival order %v", c, order[c], want)
		}
	}
}

func TestInvalidCommandsGetInvalidResults(t *testing.T) {
	h := start(t, nil, setup{})
	h.identified()
	tests := []struct {
		name    string
		frame   string
		wantErr string
	}{
		{"unknown action", `{"type":"command","id":"i1","action":"explode","containerId":"web"}`, `unknown action "explode"`},
		{"path in containerId", `{"type":"command","id":"i2","action":"start","containerId":"../x"}`, "containerId"},
		{"slash in containerId", `{"type":"command","id":"i3","action":"start","containerId":"a/b"}`, "containerId"},
		{"empty containerId", `{"type":"command","id":"i4","action":"stop","containerId":""}`, "containerId is required"},
		{"negative memory", `{"type":"command","id":"i5","action":"create","containerId":"web","eggConfig":{"image":"nginx"},"resources":{"memory":"-1g"}}`, "resources.memory"},
		{"huge memory", `{"type":"command","id":"i6","action":"create","containerId":"web","eggConfig":{"image":"nginx"},"resources":{"memory":"1e99g"}}`, "resources.memory"},
		{"create without eggConfig", `{"type":"command","id":"i7","action":"create","containerId":"web"}`, "eggConfig is required"},
		{"lines as string", `{"type":"command","id":"i8","action":"logs","containerId":"web","lines":"ten"}`, `"lines"`},
		{"containerId as number", `{"type":"command","id":"i9","action":"start","containerId":42}`, `"containerId"`},
		{"environment as list", `{"type":"command","id":"i10","action":"create","containerId":"web","eggConfig":{"image":"x"},"environment":["A=1"]}`, `"environment"`},
		{"missing action", `{"type":"command","id":"i11","containerId":"web"}`, "action is required"},
		// The last of repeated keys counts, in the peek as in the decoding.
		{"type repeated, last null", `{"type":"command","id":"i12","action":"start","containerId":"web","type":null}`, `no "type" string`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := regexp.MustCompile(`"id":"([^"]+)"`).FindStringSubmatch(tc.frame)[1]
			h.sendRaw(tc.frame)
			r := h.srv.ExpectResult(id)
			if r.Status != protocol.StatusError || r.Code != protocol.CodeInvalid {
				t.Fatalf("result %+v, want status error, code invalid", r)
			}
			if !strings.Contains(r.Error, tc.wantErr) {
				t.Errorf("error %q does not mention %q", r.Error, tc.wantErr)
			}
		})
	}
	if calls := h.rt.Calls(); slices.ContainsFunc(calls, func(c agenttest.Call) bool { return c.Method != "Info" && c.Method != "List" && c.Method != "Events" }) {
		t.Errorf("invalid commands reached the runtime: %+v", calls)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestCommandWithoutIDGetsGeneratedID(t *testing.T) {
	h := start(t, nil, setup{})
	h.identified()
	h.sendRaw(`{"type":"command","action":"start","containerId":"web"}`)
	r := h.srv.Expect(protocol.TypeCommandResult).(protocol.CommandResult)
	if !uuidRE.MatchString(r.CommandID) || r.Status != protocol.StatusSuccess {
		t.Errorf("result %+v, want success with a generated UUID", r)
	}
	// A malformed command without an id is answered too.
	h.sendRaw(`{"type":"command","action":"logs","containerId":"web","lines":"x"}`)
	r = h.srv.Expect(protocol.TypeCommandResult).(protocol.CommandResult)
	if !uuidRE.MatchString(r.CommandID) || r.Code != protocol.CodeInvalid {
		t.Errorf("result %+v, want invalid with a generated UUID", r)
	}
}

func TestMalformedAndBinaryFramesSurvive(t *testing.T) {
	h := start(t, nil, setup{})
	h.identified()
	for _, f := range []string{
		`{not json`,
		``,
		`[]`,
		`{"type":123}`,
		`{"id":"no-type"}`,
		`{"type":"mystery","id":"m1"}`,
		`{"type":"heartbeat","nodeId":"x"}`,
		`{"type":"cancel","commandId":7}`,
		`{"type":"command","id":"` + strings.Repeat("x", 300) + `","action":"start","containerId":"web"}`,
	} {
		h.sendRaw(f)
	}
	if err := h.srv.SendBinary([]byte{0xff, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
	h.send(protocol.Command{ID: "after", Action: protocol.ActionStart, ContainerID: "web"})
	if r := h.srv.ExpectResult("after"); r.Status != protocol.StatusSuccess {
		t.Errorf("command after bad frames: %+v", r)
	}
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	if n := h.srv.Connections(); n != 1 {
		t.Errorf("bad frames cost the connection: %d connections", n)
	}
	if n := len(h.logs.entries("malformed frame")); n < 4 {
		t.Errorf("malformed frames logged %d times, want at least 4", n)
	}
	if len(h.logs.entries("binary frame ignored: the protocol uses text frames")) != 1 {
		t.Error("binary frame not logged")
	}
	// The unknown type with an id is ignored, not answered; the 300-char
	// id is a valid string id and is answered normally.
	for _, r := range h.srv.Received() {
		if res, ok := r.Msg.(protocol.CommandResult); ok && res.CommandID == "m1" {
			t.Errorf("an unknown message type was answered: %+v", res)
		}
	}
}

func TestOversizeFrameClosesWith1009AndReconnects(t *testing.T) {
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.MaxMessageBytes = 4096 }})
	h.identified()
	h.sendRaw(`{"type":"command","id":"big","action":"start","containerId":"web","environment":{"X":"` + strings.Repeat("y", 8000) + `"}}`)
	if cl := h.srv.ExpectClose(); cl.Code != 1009 {
		t.Errorf("server saw close code %d, want 1009", cl.Code)
	}
	h.identified()
	if !strings.Contains(h.logs.String(), "1009") {
		t.Error("the 1009 close is not in the logs")
	}
	if h.rt.CallCount("Start") != 0 {
		t.Error("the oversize command was executed")
	}
}

func TestResultsProducedWhileDisconnectedDeliveredInOrder(t *testing.T) {
	gates := map[string]chan struct{}{"r1": make(chan struct{}), "r2": make(chan struct{}), "r3": make(chan struct{})}
	rt := &agenttest.Runtime{LogsFunc: func(ctx context.Context, p protocol.LogsParams) ([]string, error) {
		id := strings.TrimPrefix(p.ContainerID, "c-")
		<-gates[id]
		return []string{"done " + id}, nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	for _, id := range []string{"r1", "r2", "r3"} {
		h.send(protocol.Command{ID: id, Action: protocol.ActionLogs, ContainerID: "c-" + id})
	}
	testsupport.WaitFor(t, "three running commands", func() bool { return rt.CallCount("Logs") == 3 })
	h.srv.Refuse(503)
	h.srv.DropConns()
	testsupport.WaitFor(t, "disconnect", func() bool { return h.agent.Ready() != nil })
	for i, id := range []string{"r2", "r3", "r1"} { // finish out of arrival order
		close(gates[id])
		testsupport.WaitFor(t, "result of "+id+" queued", func() bool { return agent.OutboxLen(h.agent) == i+1 })
	}
	h.srv.Refuse(0)
	ctx := waitCtx(t)
	var got []string
	for len(got) < 5 {
		r, err := h.srv.NextFrame(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if r.Conn != 2 {
			continue
		}
		if res, ok := r.Msg.(protocol.CommandResult); ok {
			got = append(got, res.CommandID)
		} else {
			got = append(got, r.Type)
		}
	}
	if want := []string{"agent_identify", "inventory", "r2", "r3", "r1"}; !slices.Equal(got, want) {
		t.Errorf("after reconnect got %v, want %v", got, want)
	}
}

func TestDuplicateCommandIDNotExecutedTwice(t *testing.T) {
	release := make(chan struct{})
	// dup-running asks for one line, the marker for the default.
	rt := &agenttest.Runtime{LogsFunc: func(ctx context.Context, p protocol.LogsParams) ([]string, error) {
		if p.Lines == 1 {
			<-release
		}
		return []string{fmt.Sprintf("ran %d lines of %s", p.Lines, p.ContainerID)}, nil
	}}
	h := start(t, rt, setup{})
	h.identified()

	t.Run("finished", func(t *testing.T) {
		h.send(protocol.Command{ID: "dup-done", Action: protocol.ActionStart, ContainerID: "web"})
		first := h.srv.ExpectResult("dup-done")
		// The server has the result; until the server has confirmed it, a
		// duplicate finds it still on its way and sends nothing more.
		testsupport.WaitFor(t, "the result confirmed", func() bool { return agent.OutboxLen(h.agent) == 0 })
		h.send(protocol.Command{ID: "dup-done", Action: protocol.ActionStart, ContainerID: "web"})
		second := h.srv.ExpectResult("dup-done")
		if first.Status != second.Status || fmt.Sprint(first.Result) != fmt.Sprint(second.Result) {
			t.Errorf("replayed result %+v differs from the original %+v", second, first)
		}
		if n := h.rt.CallCount("Start"); n != 1 {
			t.Errorf("Start ran %d times, want 1", n)
		}
	})
	t.Run("result on its way", func(t *testing.T) {
		// The server has read the result but not yet confirmed it (no
		// pong): a repeat of the id (a server resending what it sent before
		// a reconnect) gets no second copy; the result reaches the server
		// anyway, confirmed, or sent again on the next connection.
		h.srv.SwallowPings(true)
		h.send(protocol.Command{ID: "dup-flight", Action: protocol.ActionStart, ContainerID: "web"})
		h.srv.ExpectResult("dup-flight")
		h.send(protocol.Command{ID: "dup-flight", Action: protocol.ActionStart, ContainerID: "web"})
		h.send(protocol.Command{ID: "marker-flight", Action: protocol.ActionStart, ContainerID: "web"})
		h.srv.ExpectResult("marker-flight") // results go out in order: a second copy would come first
		if n := len(h.logs.entries("duplicate command id: its result is on its way")); n != 1 {
			t.Errorf("the repeat logged %d times as on its way, want once", n)
		}
		n := 0
		for _, r := range h.srv.Received() {
			if res, ok := r.Msg.(protocol.CommandResult); ok && res.CommandID == "dup-flight" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("got %d results for the repeated id, want 1", n)
		}
		h.srv.SwallowPings(false)
	})
	t.Run("still running", func(t *testing.T) {
		h.send(protocol.Command{ID: "dup-running", Action: protocol.ActionLogs, ContainerID: "db", Lines: intp(1)})
		testsupport.WaitFor(t, "the command to run", func() bool { return h.rt.CallCount("Logs") == 1 })
		h.send(protocol.Command{ID: "dup-running", Action: protocol.ActionLogs, ContainerID: "db", Lines: intp(1)})
		// A marker on the same container runs after the original.
		h.send(protocol.Command{ID: "marker", Action: protocol.ActionLogs, ContainerID: "db"})
		testsupport.WaitFor(t, "the duplicate to be seen", func() bool {
			return len(h.logs.entries("duplicate command id: already accepted; its result follows when it finishes")) == 1
		})
		close(release)
		h.srv.ExpectResult("dup-running")
		h.srv.ExpectResult("marker")
		n := 0
		for _, r := range h.srv.Received() {
			if res, ok := r.Msg.(protocol.CommandResult); ok && res.CommandID == "dup-running" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("got %d results for the duplicated running command, want 1", n)
		}
		if c := h.rt.CallCount("Logs"); c != 2 {
			t.Errorf("Logs ran %d times, want 2 (the command once, the marker once)", c)
		}
	})
}

// TestRepeatedIDWithEvictedResultNotExecuted: with a result store too small
// to keep any result, a repeated id is answered with conflict and never
// executed again (the old table forgot the id with its result and ran the
// command a second time).
func TestRepeatedIDWithEvictedResultNotExecuted(t *testing.T) {
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.ResultStoreBytes = 1 }})
	h.identified()
	h.send(protocol.Command{ID: "once", Action: protocol.ActionStart, ContainerID: "web"})
	if r := h.srv.ExpectResult("once"); r.Status != protocol.StatusSuccess {
		t.Fatalf("first result %+v", r)
	}
	h.send(protocol.Command{ID: "once", Action: protocol.ActionStart, ContainerID: "web"})
	r := h.srv.ExpectResult("once")
	if r.Status != protocol.StatusError || r.Code != protocol.CodeConflict || !strings.Contains(r.Error, "not executed again") {
		t.Errorf("repeat answered %+v, want a conflict error saying it is not executed again", r)
	}
	if n := h.rt.CallCount("Start"); n != 1 {
		t.Errorf("Start ran %d times, want 1", n)
	}
}

func TestCancelPendingCommand(t *testing.T) {
	release := make(chan struct{})
	rt := &agenttest.Runtime{StopFunc: func(ctx context.Context, id string, timeout *int) error {
		<-release
		return nil
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "first", Action: protocol.ActionStop, ContainerID: "web"})
	testsupport.WaitFor(t, "stop to run", func() bool { return rt.CallCount("Stop") == 1 })
	h.send(protocol.Command{ID: "queued", Action: protocol.ActionStart, ContainerID: "web"})
	h.send(protocol.Cancel{CommandID: "queued"})
	r := h.srv.ExpectResult("queued")
	if r.Status != protocol.StatusError || !strings.Contains(r.Error, "cancelled") {
		t.Errorf("cancelled command result %+v", r)
	}
	// Cancelling a running command does not interrupt it.
	h.send(protocol.Cancel{CommandID: "first"})
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	close(release)
	if r := h.srv.ExpectResult("first"); r.Status != protocol.StatusSuccess {
		t.Errorf("running command after cancel: %+v", r)
	}
	if rt.CallCount("Start") != 0 {
		t.Error("the cancelled command ran")
	}
}

func TestActionResults(t *testing.T) {
	var gotSignal string
	var gotTimeout *int
	rt := &agenttest.Runtime{
		CreateFunc: func(ctx context.Context, p protocol.CreateParams, progress agent.ProgressFunc) (protocol.CreateResult, []string, error) {
			progress("pull", "pulling nginx")
			return protocol.CreateResult{ContainerID: "abc123"}, []string{"disk limit not applied"}, nil
		},
		StopFunc: func(ctx context.Context, id string, timeout *int) error {
			gotTimeout = timeout
			return nil
		},
		KillFunc: func(ctx context.Context, id, signal string) error {
			gotSignal = signal
			return nil
		},
		DeleteFunc: func(ctx context.Context, id string) (bool, error) { return true, nil },
		LogsFunc: func(ctx context.Context, p protocol.LogsParams) ([]string, error) {
			return []string{fmt.Sprintf("lines=%d", p.Lines)}, nil
		},
		RestartFunc: func(ctx context.Context, id string, timeout *int) error {
			return protocol.Errorf(protocol.CodeNotFound, "No such container: %s (Status: 404)", id)
		},
		InspectFunc: func(ctx context.Context, id string) (protocol.InspectResult, error) {
			return protocol.InspectResult{ContainerID: id, State: "exited", ExitCode: 137, OOMKilled: true}, nil
		},
		StatsFunc: func(ctx context.Context, id string) (protocol.StatsResult, error) {
			panic("stats exploded")
		},
	}
	h := start(t, rt, setup{})
	h.identified()
	tests := []struct {
		cmd  protocol.Command
		want string // the JSON of result, or the error
	}{
		{protocol.Command{Action: "create", ContainerID: "web", EggConfig: &protocol.EggConfig{Image: "nginx"}}, `{"containerId":"abc123"}`},
		{protocol.Command{Action: "start", ContainerID: "web"}, `{"message":"Container started"}`},
		{protocol.Command{Action: "stop", ContainerID: "web", Timeout: intp(3)}, `{"message":"Container stopped"}`},
		{protocol.Command{Action: "kill", ContainerID: "web"}, `{"message":"Container killed"}`},
		{protocol.Command{Action: "delete", ContainerID: "web"}, `{"alreadyAbsent":true,"message":"Container deleted"}`},
		{protocol.Command{Action: "logs", ContainerID: "web"}, `{"logs":["lines=100"]}`},
		{protocol.Command{Action: "logs", ContainerID: "web", Lines: intp(5)}, `{"logs":["lines=5"]}`},
		{protocol.Command{Action: "list"}, `{"containers":[]}`},
		{protocol.Command{Action: "update", ContainerID: "web", Resources: &protocol.Resources{CPU: 0.5}}, `{"message":"Container updated"}`},
		{protocol.Command{Action: "inspect", ContainerID: "web"}, `{"containerId":"web","dockerId":"","exitCode":137,"image":"","limits":{"cpu":0,"memoryBytes":0,"nanoCpus":0,"pidsLimit":0},"oomKilled":true,"restartCount":0,"running":false,"state":"exited"}`},
		{protocol.Command{Action: "restart", ContainerID: "gone"}, "error not_found: No such container: gone (Status: 404)"},
		{protocol.Command{Action: "stats", ContainerID: "web"}, "error internal: internal error while running stats: stats exploded"},
	}
	for i, tc := range tests {
		tc.cmd.ID = fmt.Sprintf("a%d", i)
		h.send(tc.cmd)
		r := h.srv.ExpectResult(tc.cmd.ID)
		var got string
		if r.Status == protocol.StatusSuccess {
			got = jsonOf(t, r.Result)
		} else {
			got = fmt.Sprintf("error %s: %s", r.Code, r.Error)
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.cmd.Action, got, tc.want)
		}
		if tc.cmd.Action == "create" && !slices.Equal(r.Warnings, []string{"disk limit not applied"}) {
			t.Errorf("create warnings %v not passed through", r.Warnings)
		}
	}
	p := h.srv.Expect(protocol.TypeCommandProgress).(protocol.CommandProgress)
	if p.CommandID != "a0" || p.Stage != "pull" {
		t.Errorf("progress %+v, want stage pull of a0", p)
	}
	if gotSignal != "SIGKILL" {
		t.Errorf("kill signal %q, want the default SIGKILL", gotSignal)
	}
	if gotTimeout == nil || *gotTimeout != 3 {
		t.Errorf("stop timeout %v, want 3", gotTimeout)
	}
}

func TestContainerEventsOnlyWhileConnected(t *testing.T) {
	emits := make(chan protocol.ContainerEvent)
	rt := &agenttest.Runtime{EventsFunc: func(ctx context.Context, emit func(protocol.ContainerEvent)) error {
		for {
			select {
			case ev := <-emits:
				emit(ev)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}}
	h := start(t, rt, setup{})
	h.identified()
	testsupport.WaitFor(t, "Ready", func() bool { return h.agent.Ready() == nil })
	code := 137
	emits <- protocol.ContainerEvent{ContainerID: "web", Action: "die", ExitCode: &code, Timestamp: "2026-01-01T00:00:00Z"}
	ev := h.srv.Expect(protocol.TypeContainerEvent).(protocol.ContainerEvent)
	if ev.ContainerID != "web" || ev.Action != "die" || ev.ExitCode == nil || *ev.ExitCode != 137 {
		t.Errorf("event %+v", ev)
	}
	// While disconnected, events are not queued.
	h.srv.Refuse(503)
	h.srv.DropConns()
	testsupport.WaitFor(t, "disconnect", func() bool { return h.agent.Ready() != nil })
	emits <- protocol.ContainerEvent{ContainerID: "web", Action: "start", Timestamp: "2026-01-01T00:00:01Z"}
	h.srv.Refuse(0)
	h.identified()
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	if n := h.srv.Count(protocol.TypeContainerEvent); n != 1 {
		t.Errorf("got %d events, want 1: an event from a disconnected period was queued", n)
	}
}

// TestEventsStreamEndIsReported: the runtime resubscribes by itself
// (internal/docker); the agent does not retry on top of it. A stream that
// ends while the agent runs is one the runtime gave up on: logged as an
// error, followed by an inventory, and the agent reports itself not alive
// so that it is restarted.
func TestEventsStreamEndIsReported(t *testing.T) {
	end := make(chan struct{})
	rt := &agenttest.Runtime{EventsFunc: func(ctx context.Context, emit func(protocol.ContainerEvent)) error {
		select {
		case <-end:
			return errors.New("engine gone for good")
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	h := start(t, rt, setup{})
	h.identified()
	h.srv.Expect(protocol.TypeInventory)
	testsupport.WaitFor(t, "Ready", func() bool { return h.agent.Ready() == nil })
	if err := h.agent.Alive(); err != nil {
		t.Fatalf("Alive = %v while the events stream runs", err)
	}
	close(end)
	h.srv.Expect(protocol.TypeInventory)
	testsupport.WaitFor(t, "the agent not alive", func() bool { return h.agent.Alive() != nil })
	if len(h.logs.entries("container event stream ended: container events are no longer relayed (inventories still are); restart the agent")) != 1 {
		t.Error("the end of the stream was not logged once")
	}
	if n := rt.CallCount("Events"); n != 1 {
		t.Errorf("Events called %d times, want once: the runtime resubscribes, not the agent", n)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	var m any
	resultOf(t, protocol.CommandResult{Result: v}, &m)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestRuntimeGetsParsedArguments: the agent validates a command once and
// hands the runtime its operation's arguments, sizes in bytes and since as
// a time.
func TestRuntimeGetsParsedArguments(t *testing.T) {
	var (
		mu      sync.Mutex
		created protocol.CreateParams
		updated protocol.Limits
		logs    protocol.LogsParams
	)
	rt := &agenttest.Runtime{
		CreateFunc: func(ctx context.Context, p protocol.CreateParams, _ agent.ProgressFunc) (protocol.CreateResult, []string, error) {
			mu.Lock()
			defer mu.Unlock()
			created = p
			return protocol.CreateResult{ContainerID: "d1"}, nil, nil
		},
		UpdateFunc: func(ctx context.Context, id string, l protocol.Limits) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			updated = l
			return nil, nil
		},
		LogsFunc: func(ctx context.Context, p protocol.LogsParams) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			logs = p
			return nil, nil
		},
	}
	h := start(t, rt, setup{})
	h.identified()
	h.send(protocol.Command{ID: "c", Action: protocol.ActionCreate, ContainerID: "web",
		EggConfig: &protocol.EggConfig{Image: "nginx", PullPolicy: protocol.PullNever},
		Resources: &protocol.Resources{CPU: 1.5, Memory: "512m", Disk: "1g", Pids: 9}, Environment: map[string]string{"A": "1"}})
	h.send(protocol.Command{ID: "u", Action: protocol.ActionUpdate, ContainerID: "web", Resources: &protocol.Resources{Memory: "1GiB"}})
	h.send(protocol.Command{ID: "l", Action: protocol.ActionLogs, ContainerID: "web", Since: "1700000000.25", Timestamps: true})
	for _, id := range []string{"c", "u", "l"} {
		if r := h.srv.ExpectResult(id); r.Status != protocol.StatusSuccess {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := (protocol.Limits{CPU: 1.5, Memory: 512 << 20, Disk: 1 << 30, Pids: 9}); created.Limits != want ||
		created.ContainerID != "web" || created.Egg.Image != "nginx" || created.Egg.PullPolicy != protocol.PullNever || created.Environment["A"] != "1" {
		t.Errorf("Create got %+v, want limits %+v", created, want)
	}
	if want := (protocol.Limits{Memory: 1 << 30}); updated != want {
		t.Errorf("Update got %+v, want %+v", updated, want)
	}
	if want := (protocol.LogsParams{ContainerID: "web", Lines: protocol.DefaultLogLines, Since: time.Unix(1700000000, 250000000), Timestamps: true}); !logs.Since.Equal(want.Since) ||
		logs.ContainerID != want.ContainerID || logs.Lines != want.Lines || !logs.Timestamps {
		t.Errorf("Logs got %+v, want %+v", logs, want)
	}
}
