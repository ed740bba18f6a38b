package server

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// probeHandler records how a probe connection ended.
type probeHandler struct {
	gws.BuiltinEventHandler
	closed chan error
}

func (p *probeHandler) OnClose(_ *gws.Conn, err error) { p.closed <- err }

// probe dials the node socket with the probe header, as `lormas-agent
// doctor` does, and returns the handshake status and the close frame.
func (h *harness) probe(t *testing.T, token string) (status int, code uint16, reason string) {
	t.Helper()
	ph := &probeHandler{closed: make(chan error, 1)}
	hdr := http.Header{"Authorization": {"Bearer " + token}, protocol.ProbeHeader: {"1"}}
	conn, resp, err := gws.NewClient(ph, &gws.ClientOption{Addr: h.wsURL(""), RequestHeader: hdr})
	if err != nil {
		if resp == nil {
			t.Fatalf("probe: %v", err)
		}
		return resp.StatusCode, 0, ""
	}
	go conn.ReadLoop()
	select {
	case err := <-ph.closed:
		var ce *gws.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("probe ended without a close frame: %v", err)
		}
		return http.StatusSwitchingProtocols, ce.Code, string(ce.Reason)
	case <-time.After(waitLimit):
		_ = conn.NetConn().Close()
		t.Fatal("the server kept the probe open: it took it for a session")
	}
	return 0, 0, ""
}

// `lormas-agent doctor` on a live node (issue 11): a probe with the node's
// token is upgraded and closed at once with 1000, and the node's running
// session is neither replaced nor closed; a probe with a bad token is
// refused (401) like a session, and counts against the failure budget.
func TestProbeLeavesTheRunningSessionAlone(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("live")
	running := h.connect(n.ID, n.Token)

	status, code, reason := h.probe(t, n.Token)
	if status != http.StatusSwitchingProtocols || code != 1000 || reason != protocol.ProbeCloseReason {
		t.Fatalf("probe = HTTP %d, close %d %q; want 101, 1000 %q", status, code, reason, protocol.ProbeCloseReason)
	}
	select {
	case <-running.closed:
		t.Fatalf("the running session was closed by the probe: %v", running.closeErr)
	default:
	}
	s := h.srv.hub.session(n.ID)
	if s == nil || s.conn.RemoteAddr().String() != running.conn.LocalAddr().String() {
		t.Fatal("the probe replaced the node's session")
	}
	// The running session still carries commands.
	done := make(chan []byte)
	go func() {
		_, data := h.request("POST", "/api/nodes/"+n.ID+"/commands", map[string]any{"action": "start", "containerId": "c1"}, testAdminToken)
		done <- data
	}()
	cmd := running.command()
	running.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgStarted}, nil))
	if got := <-done; !strings.Contains(string(got), protocol.MsgStarted) {
		t.Errorf("command result after the probe = %s", got)
	}

	if status, _, _ := h.probe(t, n.Token+"x"); status != http.StatusUnauthorized {
		t.Errorf("probe with a bad token = HTTP %d, want 401", status)
	}
	other := h.createNode("idle")
	if status, code, _ := h.probe(t, other.Token); status != http.StatusSwitchingProtocols || code != 1000 {
		t.Errorf("probe of a node without a session = HTTP %d close %d", status, code)
	}
	if h.srv.hub.connected(other.ID) {
		t.Error("a probe attached a session")
	}
}
