package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// consoleClient is a browser-style WebSocket client of a console bridge.
type consoleClient struct {
	t        *testing.T
	conn     *gws.Conn
	binary   chan []byte
	text     chan []byte
	closed   chan struct{}
	closeErr error
}

func (c *consoleClient) OnOpen(*gws.Conn)                {}
func (c *consoleClient) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (c *consoleClient) OnPong(*gws.Conn, []byte)        {}
func (c *consoleClient) OnClose(_ *gws.Conn, err error)  { c.closeErr = err; close(c.closed) }
func (c *consoleClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if m.Opcode == gws.OpcodeBinary {
		c.binary <- bytes.Clone(m.Bytes())
	} else {
		c.text <- bytes.Clone(m.Bytes())
	}
}

// openConsole dials a console WebSocket; header carries the admin token
// when set. It returns the client or the handshake's status.
func (h *harness) openConsole(path string, header bool) (*consoleClient, int) {
	h.t.Helper()
	hdr := http.Header{}
	if header {
		hdr.Set("Authorization", "Bearer "+testAdminToken)
	}
	c := &consoleClient{t: h.t, binary: make(chan []byte, 64), text: make(chan []byte, 8), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(h.url, "http") + path, RequestHeader: hdr})
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode
		}
		h.t.Fatalf("dial %s: %v", path, err)
	}
	c.conn = conn
	go conn.ReadLoop()
	h.t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c, http.StatusSwitchingProtocols
}

func (c *consoleClient) nextBinary() []byte {
	c.t.Helper()
	select {
	case b := <-c.binary:
		return b
	case <-time.After(waitLimit):
		c.t.Fatal("no binary frame")
	}
	return nil
}

func (c *consoleClient) waitClosed() (uint16, string) {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(waitLimit):
		c.t.Fatal("console not closed")
	}
	var ce *gws.CloseError
	if errors.As(c.closeErr, &ce) {
		return ce.Code, string(ce.Reason)
	}
	return 0, ""
}

// nextOf returns the agent's next frame of type typ, skipping pings.
func (a *testAgent) nextOf(typ string) protocol.Message {
	a.t.Helper()
	for {
		m, err := protocol.Decode(a.next())
		if err != nil {
			a.t.Fatal(err)
		}
		if m.MessageType() == typ {
			return m
		}
	}
}

func (h *harness) ticket(node, container, action string) string {
	h.t.Helper()
	var t struct {
		Ticket    string `json:"ticket"`
		Action    string `json:"action"`
		ExpiresAt string `json:"expiresAt"`
	}
	decode(h.t, h.admin("POST", "/api/nodes/"+node+"/containers/"+container+"/tickets", map[string]string{"action": action}, http.StatusCreated), &t)
	if len(t.Ticket) < 40 || t.ExpiresAt == "" || t.Action != action {
		h.t.Fatalf("ticket %+v", t)
	}
	return t.Ticket
}

// TestConsoleExecBridgeWithTicket drives an interactive exec the way a
// browser does: a one-time ticket, raw bytes both ways, a resize, the
// result as the last text frame.
func TestConsoleExecBridgeWithTicket(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("console")
	a := h.connect(n.ID, n.Token)
	tk := h.ticket(n.ID, "web", "exec")
	c, status := h.openConsole("/api/nodes/"+n.ID+"/containers/web/exec?cmd=sh&cmd=-l&tty=1&cols=90&rows=30&ticket="+url.QueryEscape(tk), false)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade with a ticket = %d", status)
	}
	cmd := a.nextOf(protocol.TypeCommand).(protocol.Command)
	if cmd.Action != protocol.ActionExec || cmd.ContainerID != "web" || !cmd.Stdin || !cmd.TTY || cmd.Cols != 90 || cmd.Rows != 30 ||
		strings.Join(cmd.Cmd, " ") != "sh -l" {
		t.Fatalf("command %+v", cmd)
	}
	if err := c.conn.WriteMessage(gws.OpcodeBinary, []byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	if in := a.nextOf(protocol.TypeStdin).(protocol.Stdin); in.CommandID != cmd.ID || string(in.Data) != "ls\n" {
		t.Errorf("stdin %+v", in)
	}
	_ = c.conn.WriteMessage(gws.OpcodeText, []byte(`{"type":"resize","cols":120,"rows":40}`))
	if r := a.nextOf(protocol.TypeResize).(protocol.Resize); r.Cols != 120 || r.Rows != 40 || r.CommandID != cmd.ID {
		t.Errorf("resize %+v", r)
	}
	a.send(protocol.Stream{CommandID: cmd.ID, Stream: "stdout", Data: []byte{0xff, 'o', 'k'}})
	if got := c.nextBinary(); !bytes.Equal(got, []byte{0xff, 'o', 'k'}) {
		t.Errorf("client got %q", got)
	}
	code := 3
	a.send(protocol.Success(cmd.ID, protocol.SessionResult{ExitCode: &code}, nil))
	select {
	case f := <-c.text:
		if !bytes.Contains(f, []byte(`"exitCode":3`)) {
			t.Errorf("final text frame %s, want the result", f)
		}
	case <-time.After(waitLimit):
		t.Fatal("no result frame")
	}
	if code, _ := c.waitClosed(); code != 1000 {
		t.Errorf("close code %d, want 1000", code)
	}

	// The ticket was used up; one for another container does not open this one.
	if _, status := h.openConsole("/api/nodes/"+n.ID+"/containers/web/exec?cmd=sh&ticket="+url.QueryEscape(tk), false); status != http.StatusUnauthorized {
		t.Errorf("second use of a ticket = %d, want 401", status)
	}
	other := h.ticket(n.ID, "db", "attach")
	if _, status := h.openConsole("/api/nodes/"+n.ID+"/containers/web/attach?ticket="+url.QueryEscape(other), false); status != http.StatusUnauthorized {
		t.Errorf("a ticket of another container = %d, want 401", status)
	}
	expired := h.ticket(n.ID, "web", "attach")
	h.srv.setClock(func() time.Time { return time.Now().Add(time.Minute) })
	if _, status := h.openConsole("/api/nodes/"+n.ID+"/containers/web/attach?ticket="+url.QueryEscape(expired), false); status != http.StatusUnauthorized {
		t.Errorf("an expired ticket = %d, want 401", status)
	}
	if _, status := h.openConsole("/api/nodes/"+n.ID+"/containers/web/attach", false); status != http.StatusUnauthorized {
		t.Errorf("no credentials = %d, want 401", status)
	}
	if strings.Contains(h.logs.String(), tk) || strings.Contains(h.logs.String(), other) {
		t.Error("a ticket appears in the server's logs")
	}
}

// Review L3: tickets were not tied to an action, so one minted for a stats
// graph or a read-only attach view opened GET .../exec?cmd=sh&user=root.
// Now the ticket request names the action, and a ticket opens that
// endpoint only (and is used up when presented at another).
func TestConsoleTicketIsForOneAction(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("tickets")
	a := h.connect(n.ID, n.Token)
	base := "/api/nodes/" + n.ID + "/containers/web/"
	for _, action := range []string{"stats", "attach"} {
		tk := h.ticket(n.ID, "web", action)
		if _, status := h.openConsole(base+"exec?cmd=sh&user=root&ticket="+url.QueryEscape(tk), false); status != http.StatusUnauthorized {
			t.Errorf("a %s ticket at exec = %d, want 401", action, status)
		}
		// Presented at the wrong endpoint, it is used up.
		if action == "attach" {
			if _, status := h.openConsole(base+"attach?ticket="+url.QueryEscape(tk), false); status != http.StatusUnauthorized {
				t.Errorf("an attach ticket after its use at exec = %d, want 401", status)
			}
		}
	}
	exec := h.ticket(n.ID, "web", "exec")
	if _, status := h.openConsole(base+"attach?ticket="+url.QueryEscape(exec), false); status != http.StatusUnauthorized {
		t.Errorf("an exec ticket at attach = %d, want 401", status)
	}

	// Each opens its own endpoint.
	attach := h.ticket(n.ID, "web", "attach")
	if _, status := h.openConsole(base+"attach?ticket="+url.QueryEscape(attach), false); status != http.StatusSwitchingProtocols {
		t.Fatalf("an attach ticket at attach = %d, want 101", status)
	}
	if cmd := a.nextOf(protocol.TypeCommand).(protocol.Command); cmd.Action != protocol.ActionAttach {
		t.Errorf("command %+v, want attach", cmd)
	}
	stats := h.ticket(n.ID, "web", "stats")
	status := make(chan int, 1)
	go func() {
		resp, err := http.Get(h.url + base + "stats?follow=1&ticket=" + url.QueryEscape(stats))
		if err != nil {
			status <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	cmd := a.nextOf(protocol.TypeCommand).(protocol.Command)
	if cmd.Action != protocol.ActionStats || !cmd.Follow {
		t.Fatalf("command %+v, want stats with follow", cmd)
	}
	a.send(protocol.Success(cmd.ID, protocol.StatsFollowResult{}, nil))
	if got := <-status; got != http.StatusOK {
		t.Errorf("a stats ticket at stats = %d, want 200", got)
	}

	// The request must name one of the three actions.
	for _, c := range []struct {
		body any
		want string
	}{
		{nil, "request body is empty"},
		{map[string]string{}, "action is required"},
		{map[string]string{"action": "shell"}, `got "shell"`},
		{map[string]string{"action": "exec", "cmd": "sh"}, "unknown field"},
	} {
		resp, data := h.request("POST", base+"tickets", c.body, testAdminToken)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorOf(t, data), c.want) {
			t.Errorf("ticket request %v = %d %s, want 400 %q", c.body, resp.StatusCode, data, c.want)
		}
	}
}

// TestConsoleAttachBridgeEnds: a client closing cancels the session on the
// agent; an agent going away closes the client.
func TestConsoleAttachBridgeEnds(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("attach")
	a := h.connect(n.ID, n.Token)
	c, _ := h.openConsole("/api/nodes/"+n.ID+"/containers/game/attach?lines=20", true)
	cmd := a.nextOf(protocol.TypeCommand).(protocol.Command)
	if cmd.Action != protocol.ActionAttach || cmd.Lines == nil || *cmd.Lines != 20 {
		t.Fatalf("command %+v", cmd)
	}
	_ = c.conn.WriteClose(1000, nil)
	if m := a.nextOf(protocol.TypeCancel).(protocol.Cancel); m.CommandID != cmd.ID {
		t.Errorf("cancel %+v, want one for %s", m, cmd.ID)
	}

	c2, _ := h.openConsole("/api/nodes/"+n.ID+"/containers/game/attach", true)
	a.nextOf(protocol.TypeCommand)
	_ = a.conn.WriteClose(1000, nil)
	if code, reason := c2.waitClosed(); code != 1011 || !strings.Contains(reason, "disconnected") {
		t.Errorf("close %d %q, want 1011 node disconnected", code, reason)
	}
	// Interactive commands are not accepted where nobody can type.
	resp, data := h.request("POST", "/api/nodes/"+n.ID+"/commands", `{"action":"attach","containerId":"game"}`, testAdminToken)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(data), "WebSocket") {
		t.Errorf("attach via /commands = %d %s, want 400 naming the WebSocket", resp.StatusCode, data)
	}
}

// TestConsoleExecREST runs an exec to completion through REST.
func TestConsoleExecREST(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("exec")
	a := h.connect(n.ID, n.Token)
	done := make(chan []byte, 1)
	go func() {
		resp, data := h.request("POST", "/api/nodes/"+n.ID+"/containers/web/exec",
			`{"cmd":["cat","/etc/hostname"],"env":{"A":"b"},"timeout":5}`, testAdminToken)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("exec = %d %s", resp.StatusCode, data)
		}
		done <- data
	}()
	cmd := a.nextOf(protocol.TypeCommand).(protocol.Command)
	if cmd.Action != protocol.ActionExec || cmd.Stdin || cmd.Env["A"] != "b" || *cmd.Timeout != 5 {
		t.Fatalf("command %+v", cmd)
	}
	a.send(protocol.Success(cmd.ID, protocol.ExecResult{ExitCode: 0, Stdout: "web\n"}, nil))
	var res struct {
		Result protocol.ExecResult `json:"result"`
	}
	decode(t, <-done, &res)
	if res.Result.Stdout != "web\n" {
		t.Errorf("result %+v", res)
	}
	resp, data := h.request("POST", "/api/nodes/"+n.ID+"/containers/web/exec", `{"cmd":[]}`, testAdminToken)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(data), "cmd is required") {
		t.Errorf("exec without cmd = %d %s", resp.StatusCode, data)
	}
}

// TestConsoleStatsSSE streams followed stats as events.
func TestConsoleStatsSSE(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("stats")
	a := h.connect(n.ID, n.Token)
	events := h.stream("/api/nodes/" + n.ID + "/containers/web/stats?follow=1&interval=2")
	cmd := a.nextOf(protocol.TypeCommand).(protocol.Command)
	if cmd.Action != protocol.ActionStats || !cmd.Follow || cmd.StatsInterval() != 2 {
		t.Fatalf("command %+v", cmd)
	}
	a.send(protocol.StatsSample{CommandID: cmd.ID, ContainerID: "web", CPU: 0.5, MemoryBytes: 1 << 20})
	if ev := events.next(); ev.name != "stats" || !strings.Contains(string(ev.data), `"cpu":0.5`) {
		t.Errorf("event %s %s", ev.name, ev.data)
	}
	a.send(protocol.Success(cmd.ID, protocol.StatsFollowResult{Samples: 1}, nil))
	if ev := events.next(); ev.name != "result" || !strings.Contains(string(ev.data), `"samples":1`) {
		t.Errorf("event %s %s", ev.name, ev.data)
	}
	events.ended()
	var body map[string]any
	resp, data := h.request("GET", "/api/nodes/"+n.ID+"/containers/web/stats?follow=1&interval=0.5", nil, testAdminToken)
	if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(data, &body) != nil {
		t.Errorf("interval 0.5 = %d %s, want 400", resp.StatusCode, data)
	}
}
