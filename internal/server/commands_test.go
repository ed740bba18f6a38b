package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

type postResult struct {
	status int
	body   []byte
}

// postCommand posts a command in the background.
func (h *harness) postCommand(nodeID string, body any) <-chan postResult {
	ch := make(chan postResult, 1)
	go func() {
		resp, data := h.request("POST", "/api/nodes/"+nodeID+"/commands", body, testAdminToken)
		ch <- postResult{resp.StatusCode, data}
	}()
	return ch
}

func TestCommandRoundTrip(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("worker")
	a := h.connect(n.ID, n.Token)

	// The seed's create example, sent through the REST API.
	body := `{"action":"create","containerId":"container-uuid","eggConfig":{"image":"nginx:alpine",
		"ports":[{"host":8080,"container":80}],"volumes":[{"host":"/data","container":"/app/data"}]},
		"resources":{"cpu":1.0,"memory":"512m","disk":"10g"},"environment":{"ENV_VAR":"value"}}`
	res := h.postCommand(n.ID, body)
	cmd := a.command()
	if cmd.ID == "" || cmd.Action != protocol.ActionCreate || cmd.ContainerID != "container-uuid" ||
		cmd.EggConfig == nil || cmd.EggConfig.Image != "nginx:alpine" || cmd.Resources.Memory != "512m" ||
		cmd.Environment["ENV_VAR"] != "value" {
		t.Fatalf("agent received %+v", cmd)
	}
	a.send(protocol.Success(cmd.ID, protocol.CreateResult{ContainerID: "abc123"}, []string{"disk limit not applied"}))
	r := <-res
	if r.status != http.StatusOK {
		t.Fatalf("status = %d %s, want 200", r.status, r.body)
	}
	var got protocol.CommandResult
	decode(t, r.body, &got)
	if got.Type != protocol.TypeCommandResult || got.CommandID != cmd.ID || got.Status != protocol.StatusSuccess ||
		len(got.Warnings) != 1 || got.Result.(map[string]any)["containerId"] != "abc123" {
		t.Errorf("result = %+v", got)
	}

	// An error result is still 200: the command was delivered and answered.
	res = h.postCommand(n.ID, map[string]any{"action": "start", "containerId": "missing"})
	cmd = a.command()
	a.send(protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeNotFound, "no such container: missing (Status: 404)"), nil))
	r = <-res
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"code":"not_found"`) ||
		!strings.Contains(string(r.body), `"status":"error"`) {
		t.Errorf("error result = %d %s, want 200 with the agent's error", r.status, r.body)
	}
}

func TestConcurrentCommandsMatchByID(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("busy")
	a := h.connect(n.ID, n.Token)
	const count = 5
	results := make([]<-chan postResult, count)
	for i := range count {
		results[i] = h.postCommand(n.ID, map[string]any{"action": "start", "containerId": "c" + string(rune('0'+i))})
	}
	cmds := make([]protocol.Command, count)
	for i := range count {
		cmds[i] = a.command()
	}
	// Answer in reverse order; each request gets its own container's result.
	for i := count - 1; i >= 0; i-- {
		a.send(protocol.Success(cmds[i].ID, protocol.MessageResult{Message: "started " + cmds[i].ContainerID}, nil))
	}
	for i := range count {
		r := <-results[i]
		want := "started c" + string(rune('0'+i))
		if r.status != http.StatusOK || !strings.Contains(string(r.body), want) {
			t.Errorf("request %d = %d %s, want %q", i, r.status, r.body, want)
		}
	}
}

func TestCommandErrors(t *testing.T) {
	h := newHarness(t, map[string]string{"COMMAND_TIMEOUT": "150ms"})
	offline := h.createNode("offline")
	online := h.createNode("online")
	a := h.connect(online.ID, online.Token)

	cases := []struct {
		name    string
		node    string
		body    any
		status  int
		wantErr string
	}{
		{"unknown node", "00000000-0000-0000-0000-000000000000", map[string]any{"action": "start", "containerId": "c"}, http.StatusNotFound, "not found"},
		{"not connected", offline.ID, map[string]any{"action": "start", "containerId": "c"}, http.StatusConflict, "not connected"},
		{"unknown action", online.ID, map[string]any{"action": "explode", "containerId": "c"}, http.StatusBadRequest, `unknown action "explode"`},
		{"missing action", online.ID, map[string]any{"containerId": "c"}, http.StatusBadRequest, "action is required"},
		{"path in containerId", online.ID, map[string]any{"action": "start", "containerId": "../etc"}, http.StatusBadRequest, "not a valid container name"},
		{"create without eggConfig", online.ID, map[string]any{"action": "create", "containerId": "c"}, http.StatusBadRequest, "eggConfig is required"},
		{"bad memory", online.ID, map[string]any{"action": "create", "containerId": "c", "eggConfig": map[string]any{"image": "x"}, "resources": map[string]any{"memory": "-1g"}}, http.StatusBadRequest, "resources.memory"},
		{"follow", online.ID, map[string]any{"action": "logs", "containerId": "c", "follow": true}, http.StatusBadRequest, "follow is not supported here"},
		{"huge since", online.ID, map[string]any{"action": "logs", "containerId": "c", "since": strings.Repeat("9", 100)}, http.StatusBadRequest, "since must be"},
		{"bad id", online.ID, map[string]any{"action": "start", "containerId": "c", "id": "has space"}, http.StatusBadRequest, "id must be"},
		{"typo field", online.ID, map[string]any{"action": "start", "container_id": "c"}, http.StatusBadRequest, `unknown field "container_id"`},
		{"invalid JSON", online.ID, `{"action":`, http.StatusBadRequest, "invalid JSON"},
		{"lines of wrong type", online.ID, `{"action":"logs","containerId":"c","lines":"ten"}`, http.StatusBadRequest, `field "lines"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, data := h.request("POST", "/api/nodes/"+c.node+"/commands", c.body, testAdminToken)
			if resp.StatusCode != c.status {
				t.Fatalf("status = %d %s, want %d", resp.StatusCode, data, c.status)
			}
			if got := errorOf(t, data); !strings.Contains(got, c.wantErr) {
				t.Errorf("error = %q, want it to contain %q", got, c.wantErr)
			}
		})
	}
	// The validation sentence is exactly the protocol's.
	bad := protocol.Command{Action: "start", ContainerID: "a/b"}
	_, data := h.request("POST", "/api/nodes/"+online.ID+"/commands", bad, testAdminToken)
	if got, want := errorOf(t, data), bad.Validate().Error(); got != want {
		t.Errorf("validation error = %q, want the protocol's %q", got, want)
	}
	select {
	case f := <-a.frames:
		t.Errorf("an invalid command reached the agent: %s", f)
	default:
	}

	t.Run("timeout", func(t *testing.T) {
		resp, data := h.request("POST", "/api/nodes/"+online.ID+"/commands", map[string]any{"action": "stop", "containerId": "slow"}, testAdminToken)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("status = %d %s, want 504", resp.StatusCode, data)
		}
		var body struct{ Error, CommandID string }
		decode(t, data, &body)
		cmd := a.command()
		if body.CommandID != cmd.ID || !strings.Contains(body.Error, "150ms") {
			t.Errorf("504 body = %+v, want commandId %s and the timeout", body, cmd.ID)
		}
		// A late result is dropped harmlessly; re-posting with the id
		// collects it from the agent (which replays instead of re-running).
		a.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgStopped}, nil))
		res := h.postCommand(online.ID, map[string]any{"id": cmd.ID, "action": "stop", "containerId": "slow"})
		again := a.command()
		if again.ID != cmd.ID {
			t.Fatalf("re-posted command id = %q, want %q", again.ID, cmd.ID)
		}
		a.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgStopped}, nil))
		if r := <-res; r.status != http.StatusOK || !strings.Contains(string(r.body), protocol.MsgStopped) {
			t.Errorf("re-post = %d %s", r.status, r.body)
		}
	})
}

func TestCommandSurvivesReconnect(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("flaky")
	a := h.connect(n.ID, n.Token)
	res := h.postCommand(n.ID, map[string]any{"action": "restart", "containerId": "web"})
	cmd := a.command()

	// The connection drops before the result is sent.
	_ = a.conn.WriteClose(1001, nil)
	testsupport.WaitFor(t, "disconnected", func() bool { return !h.srv.hub.connected(n.ID) })

	// The agent comes back; after identify the server resends the command
	// it is still waiting for, with the same id.
	b := h.connect(n.ID, n.Token)
	b.send(protocol.AgentIdentify{NodeName: "flaky", Version: "test"})
	again := b.command()
	if again.ID != cmd.ID || again.Action != protocol.ActionRestart {
		t.Fatalf("after reconnect got %+v, want command %s again", again, cmd.ID)
	}
	// The agent's queued result arrives on the new session.
	b.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgRestarted}, nil))
	r := <-res
	if r.status != http.StatusOK || !strings.Contains(string(r.body), protocol.MsgRestarted) {
		t.Errorf("result across reconnect = %d %s", r.status, r.body)
	}
	// A duplicate (the agent replaying the stored result) is harmless.
	b.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgRestarted}, nil))
	h.node(n.ID)
}

func TestShutdownEndsWaitingCommand(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("stopping")
	a := h.connect(n.ID, n.Token)
	res := h.postCommand(n.ID, map[string]any{"action": "stop", "containerId": "c"})
	a.command()
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.status != http.StatusServiceUnavailable {
		t.Errorf("waiting request after shutdown = %d %s, want 503", r.status, r.body)
	}
	if code, _ := a.waitClosed(); code != closeGoingAway {
		t.Errorf("agent closed with %d, want 1001", code)
	}
	var e apiError
	_ = json.Unmarshal(r.body, &e)
	if !strings.Contains(e.Error, "shutting down") {
		t.Errorf("error = %q", e.Error)
	}
}
