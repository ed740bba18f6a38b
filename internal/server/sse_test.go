package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func TestEventStream(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("watched")
	events := h.stream("/api/nodes/" + n.ID + "/events")
	first := events.next()
	if first.name != "node" || !strings.Contains(string(first.data), `"id":"`+n.ID+`"`) ||
		!strings.Contains(string(first.data), `"connected":false`) {
		t.Fatalf("first event = %s %s, want the node object", first.name, first.data)
	}

	a := h.connect(n.ID, n.Token)
	if ev := events.next(); ev.name != "connect" || !strings.Contains(string(ev.data), n.ID) {
		t.Errorf("event = %s %s, want connect", ev.name, ev.data)
	}
	a.send(protocol.AgentIdentify{NodeName: "watched", Version: "9.9.9"})
	if ev := events.next(); ev.name != "agent_identify" || !strings.Contains(string(ev.data), `"version":"9.9.9"`) {
		t.Errorf("event = %s %s, want agent_identify", ev.name, ev.data)
	}
	a.send([]byte("{\n  \"type\": \"heartbeat\",\n  \"nodeId\": \"" + n.ID + "\",\n  \"resources\": {\"cpu\": 0.5, \"memory\": \"512MB\"}\n}"))
	ev := events.next()
	if ev.name != "heartbeat" || !strings.Contains(string(ev.data), `"cpu":0.5`) {
		t.Errorf("event = %s %s, want the heartbeat (compacted onto one data line)", ev.name, ev.data)
	}
	exit := 137
	oom := true
	a.send(protocol.ContainerEvent{ContainerID: "web", Action: "die", ExitCode: &exit, OOMKilled: &oom})
	if ev := events.next(); ev.name != "container_event" || !strings.Contains(string(ev.data), `"exitCode":137`) {
		t.Errorf("event = %s %s, want container_event", ev.name, ev.data)
	}
	a.send(protocol.Inventory{Containers: []protocol.InventoryItem{{ContainerID: "web", State: "exited"}}})
	if ev := events.next(); ev.name != "inventory" || !strings.Contains(string(ev.data), `"containerId":"web"`) {
		t.Errorf("event = %s %s, want inventory", ev.name, ev.data)
	}
	a.send(protocol.CommandProgress{CommandID: "c1", Stage: "pull", Detail: "50%"})
	if ev := events.next(); ev.name != "command_progress" || !strings.Contains(string(ev.data), `"stage":"pull"`) {
		t.Errorf("event = %s %s, want command_progress", ev.name, ev.data)
	}
	_ = a.conn.WriteClose(1000, []byte("bye"))
	if ev := events.next(); ev.name != "disconnect" || !strings.Contains(string(ev.data), "bye") {
		t.Errorf("event = %s %s, want disconnect with the reason", ev.name, ev.data)
	}

	resp, data := h.request("GET", "/api/nodes/nope/events", nil, testAdminToken)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("events of an unknown node = %d %s, want 404", resp.StatusCode, data)
	}
}

func TestEventStreamEndsOnShutdown(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("watched")
	events := h.stream("/api/nodes/" + n.ID + "/events")
	events.next()
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	events.ended()
}

func TestLogsFollow(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("chatty")
	a := h.connect(n.ID, n.Token)
	logs := h.stream("/api/nodes/" + n.ID + "/containers/web/logs?follow=1&lines=5&timestamps=true")
	cmd := a.command()
	if cmd.Action != protocol.ActionLogs || cmd.ContainerID != "web" || !cmd.Follow || !cmd.Timestamps ||
		cmd.Lines == nil || *cmd.Lines != 5 {
		t.Fatalf("agent received %+v, want logs of web following 5 lines", cmd)
	}
	a.send(protocol.LogMessage{CommandID: cmd.ID, ContainerID: "web", Stream: "stdout", Line: "first", Timestamp: "t1"})
	a.send(protocol.LogMessage{CommandID: cmd.ID, ContainerID: "web", Stream: "stderr", Lines: []string{"second", "third"}})
	a.send(protocol.LogMessage{CommandID: "another-command", ContainerID: "web", Line: "not mine"})
	for _, want := range []string{`{"line":"first","stream":"stdout","timestamp":"t1"}`, `{"line":"second","stream":"stderr"}`, `{"line":"third","stream":"stderr"}`} {
		if ev := logs.next(); ev.name != "log" || string(ev.data) != want {
			t.Errorf("event = %s %s, want log %s", ev.name, ev.data, want)
		}
	}
	// The client goes away: the agent is told to stop following.
	logs.cancel()
	f := a.next()
	m, err := protocol.Decode(f)
	if c, ok := m.(protocol.Cancel); err != nil || !ok || c.CommandID != cmd.ID {
		t.Errorf("after the client left the agent got %s, want cancel of %s", f, cmd.ID)
	}
}

// TestLogsFollowPassesGapsOn: a gap the agent reports reaches the client
// as a "gap" event in its place, and the result event carries the counts.
func TestLogsFollowPassesGapsOn(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("flooding")
	a := h.connect(n.ID, n.Token)
	logs := h.stream("/api/nodes/" + n.ID + "/containers/web/logs?follow=1")
	cmd := a.command()
	a.send(protocol.LogMessage{CommandID: cmd.ID, ContainerID: "web", Stream: "stdout", Line: "before"})
	a.send(protocol.LogMessage{CommandID: cmd.ID, ContainerID: "web", Stream: "stdout", Gap: 1200, Timestamp: "t2"})
	a.send(protocol.LogMessage{CommandID: cmd.ID, ContainerID: "web", Stream: "stdout", Line: "after"})
	a.send(protocol.Success(cmd.ID, protocol.LogsResult{Logs: []string{}, Dropped: 1200, Sent: 2}, nil))
	want := []struct{ name, data string }{
		{"log", `{"line":"before","stream":"stdout"}`},
		{"gap", `{"lines":1200,"stream":"stdout","timestamp":"t2"}`},
		{"log", `{"line":"after","stream":"stdout"}`},
	}
	for _, w := range want {
		if ev := logs.next(); ev.name != w.name || string(ev.data) != w.data {
			t.Errorf("event = %s %s, want %s %s", ev.name, ev.data, w.name, w.data)
		}
	}
	if ev := logs.next(); ev.name != "result" || !strings.Contains(string(ev.data), `"dropped":1200`) {
		t.Errorf("event = %s %s, want the result with its dropped count", ev.name, ev.data)
	}
	logs.ended()
}

func TestLogsFollowEndsWithResult(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("finite")
	a := h.connect(n.ID, n.Token)
	logs := h.stream("/api/nodes/" + n.ID + "/containers/job/logs?follow=1")
	cmd := a.command()
	a.send(protocol.LogMessage{CommandID: cmd.ID, ContainerID: "job", Stream: "stdout", Line: "done"})
	a.send(protocol.Success(cmd.ID, protocol.LogsResult{Logs: []string{}}, nil))
	if ev := logs.next(); ev.name != "log" {
		t.Errorf("event = %s %s, want log", ev.name, ev.data)
	}
	if ev := logs.next(); ev.name != "result" || !strings.Contains(string(ev.data), `"status":"success"`) {
		t.Errorf("event = %s %s, want result", ev.name, ev.data)
	}
	logs.ended()
}

func TestLogsFollowEndsWhenNodeDisconnects(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("vanishing")
	a := h.connect(n.ID, n.Token)
	logs := h.stream("/api/nodes/" + n.ID + "/containers/job/logs?follow=1")
	a.command()
	_ = a.conn.WriteClose(1001, nil)
	if ev := logs.next(); ev.name != "error" || !strings.Contains(string(ev.data), "disconnected") {
		t.Errorf("event = %s %s, want error: node disconnected", ev.name, ev.data)
	}
	logs.ended()
}

func TestLogsOnce(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("tail")
	a := h.connect(n.ID, n.Token)
	logs := h.stream("/api/nodes/" + n.ID + "/containers/web/logs")
	cmd := a.command()
	if cmd.Follow || cmd.Lines != nil {
		t.Errorf("command = %+v, want logs without follow and default lines", cmd)
	}
	a.send(protocol.Success(cmd.ID, protocol.LogsResult{Logs: []string{"a", "b"}}, nil))
	for _, want := range []string{`{"line":"a"}`, `{"line":"b"}`} {
		if ev := logs.next(); ev.name != "log" || string(ev.data) != want {
			t.Errorf("event = %s %s, want log %s", ev.name, ev.data, want)
		}
	}
	if ev := logs.next(); ev.name != "result" || !strings.Contains(string(ev.data), `"logs":["a","b"]`) {
		t.Errorf("event = %s %s, want the result", ev.name, ev.data)
	}
	logs.ended()
}

func TestLogsBadRequests(t *testing.T) {
	h := newHarness(t, nil)
	offline := h.createNode("offline")
	online := h.createNode("online")
	h.connect(online.ID, online.Token)
	cases := []struct {
		path    string
		status  int
		wantErr string
	}{
		{"/api/nodes/" + offline.ID + "/containers/web/logs", http.StatusConflict, "not connected"},
		{"/api/nodes/nope/containers/web/logs", http.StatusNotFound, "not found"},
		{"/api/nodes/" + online.ID + "/containers/..web/logs", http.StatusBadRequest, "not a valid container name"},
		{"/api/nodes/" + online.ID + "/containers/web/logs?lines=ten", http.StatusBadRequest, "lines must be a whole number"},
		{"/api/nodes/" + online.ID + "/containers/web/logs?lines=-1", http.StatusBadRequest, "lines must be between"},
		{"/api/nodes/" + online.ID + "/containers/web/logs?follow=maybe", http.StatusBadRequest, "follow"},
		{"/api/nodes/" + online.ID + "/containers/web/logs?since=" + strings.Repeat("9", 100), http.StatusBadRequest, "since must be"},
	}
	for _, c := range cases {
		resp, data := h.request("GET", c.path, nil, testAdminToken)
		if resp.StatusCode != c.status {
			t.Errorf("GET %s = %d %s, want %d", c.path, resp.StatusCode, data, c.status)
			continue
		}
		if got := errorOf(t, data); !strings.Contains(got, c.wantErr) {
			t.Errorf("GET %s error = %q, want %q", c.path, got, c.wantErr)
		}
	}
}
