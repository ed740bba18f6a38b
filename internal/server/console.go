package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// The console for operators (docs/api.md):
//
//	POST /api/nodes/{id}/containers/{containerId}/exec      run to completion -> command_result
//	GET  /api/nodes/{id}/containers/{containerId}/exec      WebSocket: ?cmd=sh&cmd=-l&tty=1&cols=&rows=&user=&workingDir=&env=K=V
//	GET  /api/nodes/{id}/containers/{containerId}/attach    WebSocket: ?lines=N
//	GET  /api/nodes/{id}/containers/{containerId}/stats     ?follow=1&interval=N: Server-Sent Events
//	POST /api/nodes/{id}/containers/{containerId}/tickets   {"action":"exec"|"attach"|"stats"}: a one-time ticket for one of the three above
//
// A WebSocket bridge carries raw bytes in binary frames both ways; a text
// frame {"type":"resize","cols":C,"rows":R} resizes the terminal and
// {"type":"eof"} closes the process's stdin. When the session ends the
// server sends the agent's command_result as a text frame and closes with
// 1000; when the client goes away the server cancels the session on the
// agent. Output the client reads too slowly to keep up with is never
// dropped silently: the bridge closes with 1011 instead.

// Bridge bounds.
const (
	bridgeBuffer     = 64       // output frames from the agent waiting for the client
	bridgeMaxPayload = 64 << 10 // largest frame a client may send
	bridgeWrite      = 10 * time.Second
)

// consoleRoutes registers the console endpoints.
func (srv *Server) consoleRoutes(mux *http.ServeMux) {
	const base = "/api/nodes/{id}/containers/{containerId}/"
	mux.HandleFunc("POST "+base+"exec", srv.admin(srv.handleExec))
	mux.HandleFunc("GET "+base+"exec", srv.consoleAuth(ticketExec, srv.handleExecSocket))
	mux.HandleFunc("GET "+base+"attach", srv.consoleAuth(ticketAttach, srv.handleAttachSocket))
	mux.HandleFunc("GET "+base+"stats", srv.consoleAuth(ticketStats, srv.handleStats))
	mux.HandleFunc("POST "+base+"tickets", srv.admin(srv.handleTicket))
}

// execRequest is the body of POST .../exec.
type execRequest struct {
	ID         string            `json:"id,omitempty"`
	Cmd        []string          `json:"cmd"`
	User       string            `json:"user,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	TTY        bool              `json:"tty,omitempty"`
	Timeout    *int              `json:"timeout,omitempty"`
}

// handleExec runs a process to completion and answers with the agent's
// command_result ({exitCode, stdout, stderr, truncated}).
func (srv *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	var req execRequest
	if err := srv.decodeBody(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	cmd := protocol.Command{ID: req.ID, Action: protocol.ActionExec, ContainerID: r.PathValue("containerId"), Timeout: req.Timeout,
		ConsoleOptions: protocol.ConsoleOptions{Cmd: req.Cmd, User: req.User, WorkingDir: req.WorkingDir, Env: req.Env, TTY: req.TTY}}
	if err := prepareCommand(&cmd); err != nil {
		writeErr(w, err)
		return
	}
	// The agent answers within the exec's own timeout.
	wait := max(srv.cfg.CommandTimeout, time.Duration(cmd.ExecTimeout())*time.Second+10*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	result, err := srv.dispatch(ctx, n.ID, &cmd)
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(result, '\n'))
	case errors.Is(err, errNotConnected):
		writeError(w, http.StatusConflict, "node %s is not connected", n.ID)
	case errors.Is(err, errCommandTimeout):
		writeError(w, http.StatusGatewayTimeout, "node %s sent no result for exec %s within %s", n.ID, cmd.ID, wait)
	case errors.Is(err, errShuttingDown):
		writeError(w, http.StatusServiceUnavailable, "%v", err)
	case errors.Is(err, context.Canceled):
	default:
		writeErr(w, err)
	}
	srv.log.Info("exec", "node", n.ID, "command_id", cmd.ID, "container", cmd.ContainerID, "err", err)
}

// handleExecSocket bridges an interactive exec to a WebSocket client.
func (srv *Server) handleExecSocket(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cmd := protocol.Command{Action: protocol.ActionExec, ContainerID: r.PathValue("containerId"),
		ConsoleOptions: protocol.ConsoleOptions{Cmd: q["cmd"], User: q.Get("user"), WorkingDir: q.Get("workingDir"), Stdin: true}}
	for _, kv := range q["env"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			writeError(w, http.StatusBadRequest, "env must be KEY=VALUE")
			return
		}
		if cmd.Env == nil {
			cmd.Env = map[string]string{}
		}
		cmd.Env[k] = v
	}
	var err error
	if cmd.TTY, err = queryBool(q.Get("tty")); err != nil {
		writeError(w, http.StatusBadRequest, "tty: %v", err)
		return
	}
	for _, p := range []struct {
		name string
		dst  *int
	}{{"cols", &cmd.Cols}, {"rows", &cmd.Rows}} {
		if v := q.Get(p.name); v != "" {
			if *p.dst, err = strconv.Atoi(v); err != nil {
				writeError(w, http.StatusBadRequest, "%s must be a whole number, got %q", p.name, v)
				return
			}
		}
	}
	srv.bridge(w, r, &cmd)
}

// handleAttachSocket bridges an attach to a WebSocket client.
func (srv *Server) handleAttachSocket(w http.ResponseWriter, r *http.Request) {
	cmd := protocol.Command{Action: protocol.ActionAttach, ContainerID: r.PathValue("containerId")}
	if v := r.URL.Query().Get("lines"); v != "" {
		lines, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "lines must be a whole number, got %q", v)
			return
		}
		cmd.Lines = &lines
	}
	srv.bridge(w, r, &cmd)
}

// bridge sends cmd to the node and connects its session to the client's
// WebSocket.
func (srv *Server) bridge(w http.ResponseWriter, r *http.Request, cmd *protocol.Command) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	if err := prepareCommand(cmd); err != nil {
		writeErr(w, err)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeError(w, http.StatusBadRequest, "expected a WebSocket upgrade request")
		return
	}
	frame, wt, sess, ok := srv.registerStream(w, n.ID, cmd)
	if !ok {
		return
	}
	defer srv.hub.unregister(wt)

	b := &bridgeConn{srv: srv, sess: sess, cmd: cmd, closed: make(chan struct{}),
		log: srv.log.With("node", n.ID, "command_id", cmd.ID, "action", cmd.Action, "container", cmd.ContainerID)}
	up := gws.NewUpgrader(b, &gws.ServerOption{
		ReadMaxPayloadSize: bridgeMaxPayload,
		HandshakeTimeout:   10 * time.Second,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{srv.log},
	})
	// The command goes out before the upgrade, so the agent starts the
	// session while the client finishes its handshake; input the client
	// sends first reaches the agent after the command.
	sctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	err := sess.send(sctx, frame)
	cancel()
	if err != nil {
		writeError(w, http.StatusConflict, "node %s is not connected", n.ID)
		return
	}
	conn, err := up.Upgrade(w, r)
	if err != nil {
		b.cancelAgent()
		b.log.Info("console upgrade failed", "err", err)
		return
	}
	b.conn = conn
	b.log.Info("console session opened", "remote", r.RemoteAddr)
	go conn.ReadLoop()
	code, reason := b.pump(wt)
	b.close(code, reason)
	b.log.Info("console session closed", "code", code, "reason", reason)
}

// bridgeConn is one client WebSocket bridged to an agent session.
type bridgeConn struct {
	srv  *Server
	sess *session
	cmd  *protocol.Command
	conn *gws.Conn
	log  *slog.Logger

	closed    chan struct{} // the client's connection ended
	closeOnce sync.Once
	writeMu   sync.Mutex
	cancelled sync.Once
}

// pump forwards the agent's output to the client until the session ends at
// either end; it returns the close code and reason for the client.
func (b *bridgeConn) pump(wt *waiter) (uint16, string) {
	for {
		select {
		case f := <-wt.logs:
			if err := b.forward(f); err != nil {
				b.cancelAgent()
				return 1011, "write to client failed"
			}
			if wt.dropped.Load() > 0 {
				b.cancelAgent()
				return 1011, "output lost: the client read too slowly"
			}
		case res := <-wt.result:
			for drained := false; !drained; {
				select {
				case f := <-wt.logs:
					_ = b.forward(f)
				default:
					drained = true
				}
			}
			if b.write(gws.OpcodeText, res) != nil {
				return 1011, "write to client failed"
			}
			return 1000, "session ended"
		case <-wt.lost:
			return 1011, "node disconnected"
		case <-b.closed:
			b.cancelAgent()
			return 1000, ""
		case <-b.srv.closing:
			b.cancelAgent()
			return 1001, "server shutting down"
		}
	}
}

// forward writes one agent stream frame's bytes as a binary frame.
func (b *bridgeConn) forward(frame []byte) error {
	var m protocol.Stream
	if json.Unmarshal(frame, &m) != nil || m.Type != protocol.TypeStream {
		return nil // stats frames and the like do not belong on a console
	}
	return b.write(gws.OpcodeBinary, m.Data)
}

func (b *bridgeConn) write(op gws.Opcode, data []byte) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	_ = b.conn.NetConn().SetWriteDeadline(time.Now().Add(bridgeWrite))
	return b.conn.WriteMessage(op, data)
}

func (b *bridgeConn) close(code uint16, reason string) {
	b.writeMu.Lock()
	_ = b.conn.NetConn().SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	_ = b.conn.WriteClose(code, []byte(reason))
	b.writeMu.Unlock()
	_ = b.conn.NetConn().Close()
}

// cancelAgent ends the session on the agent (once).
func (b *bridgeConn) cancelAgent() {
	b.cancelled.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeWriteTimeout)
		defer cancel()
		_ = b.sess.send(ctx, mustMarshal(protocol.Cancel{CommandID: b.cmd.ID}))
	})
}

// toAgent sends one input message to the agent, waiting (and so slowing the
// client's reads) while the agent's queue is full.
func (b *bridgeConn) toAgent(m protocol.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := b.sess.send(ctx, mustMarshal(m)); err != nil {
		b.log.Debug("console input not sent to the agent", "err", err)
	}
}

// clientControl is a text frame from the client.
type clientControl struct {
	Type string `json:"type"`
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

func (b *bridgeConn) OnOpen(*gws.Conn) {}

func (b *bridgeConn) OnClose(*gws.Conn, error) {
	b.closeOnce.Do(func() { close(b.closed) })
}

func (b *bridgeConn) OnPing(c *gws.Conn, p []byte) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	_ = c.WritePong(p)
}

func (b *bridgeConn) OnPong(*gws.Conn, []byte) {}

// OnMessage carries the client's input to the agent: binary frames are
// stdin, text frames resize or eof. Their content is never logged.
func (b *bridgeConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if m.Opcode == gws.OpcodeBinary {
		if m.Data.Len() > 0 {
			b.toAgent(protocol.Stdin{CommandID: b.cmd.ID, Data: append([]byte(nil), m.Bytes()...)})
		}
		return
	}
	var c clientControl
	if err := json.Unmarshal(m.Bytes(), &c); err != nil {
		b.log.Debug("console control frame ignored: not JSON", "bytes", m.Data.Len())
		return
	}
	switch c.Type {
	case protocol.TypeResize:
		if r := (protocol.Resize{Cols: c.Cols, Rows: c.Rows}); r.Valid() {
			r.CommandID = b.cmd.ID
			b.toAgent(r)
		}
	case "eof":
		b.toAgent(protocol.Stdin{CommandID: b.cmd.ID, EOF: true})
	default:
		b.log.Debug("console control frame ignored", "type", fmt.Sprintf("%.32q", c.Type))
	}
}

// handleStats answers one stats sample (command_result), or with follow=1
// streams samples as Server-Sent Events: "stats" events (the agent's stats
// messages), then one "result" event.
func (srv *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	cmd := protocol.Command{Action: protocol.ActionStats, ContainerID: r.PathValue("containerId")}
	var err error
	if cmd.Follow, err = queryBool(q.Get("follow")); err != nil {
		writeError(w, http.StatusBadRequest, "follow: %v", err)
		return
	}
	if v := q.Get("interval"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "interval must be a number of seconds, got %q", v)
			return
		}
		cmd.Interval = &f
	}
	if err := prepareCommand(&cmd); err != nil {
		writeErr(w, err)
		return
	}
	if !cmd.Follow {
		ctx, cancel := context.WithTimeout(r.Context(), srv.cfg.CommandTimeout)
		defer cancel()
		res, err := srv.dispatch(ctx, n.ID, &cmd)
		switch {
		case err == nil:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(append(res, '\n'))
		case errors.Is(err, errNotConnected):
			writeError(w, http.StatusConflict, "node %s is not connected", n.ID)
		case errors.Is(err, errCommandTimeout):
			writeError(w, http.StatusGatewayTimeout, "no stats within %s", srv.cfg.CommandTimeout)
		default:
			writeError(w, http.StatusServiceUnavailable, "%v", err)
		}
		return
	}
	frame, wt, sess, ok := srv.registerStream(w, n.ID, &cmd)
	if !ok {
		return
	}
	defer srv.hub.unregister(wt)
	if err := sess.send(r.Context(), frame); err != nil {
		writeError(w, http.StatusConflict, "node %s is not connected", n.ID)
		return
	}
	out, err := startSSE(w)
	if err != nil {
		return
	}
	cancelAgent := func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeWriteTimeout)
		defer cancel()
		_ = sess.send(ctx, mustMarshal(protocol.Cancel{CommandID: cmd.ID}))
	}
	tick := time.NewTicker(sseKeepalive)
	defer tick.Stop()
	for {
		select {
		case f := <-wt.logs:
			if out.send(rawEvent("stats", f)) != nil {
				cancelAgent()
				return
			}
		case res := <-wt.result:
			for drained := false; !drained; {
				select {
				case f := <-wt.logs:
					_ = out.send(rawEvent("stats", f))
				default:
					drained = true
				}
			}
			_ = out.send(rawEvent("result", res))
			return
		case <-wt.lost:
			_ = out.send(jsonEvent("error", apiError{Error: "node disconnected; the stats stream ended"}))
			return
		case <-tick.C:
			if out.keepalive() != nil {
				cancelAgent()
				return
			}
		case <-r.Context().Done():
			cancelAgent()
			return
		case <-srv.closing:
			cancelAgent()
			return
		}
	}
}

// registerStream registers a streaming waiter for cmd on node's session and
// returns the command's frame to send; on failure it has answered w (409
// when the node is not connected, else 503) and ok is false. The caller
// unregisters wt when the stream ends.
func (srv *Server) registerStream(w http.ResponseWriter, nodeID string, cmd *protocol.Command) (frame []byte, wt *waiter, sess *session, ok bool) {
	frame = mustMarshal(cmd)
	wt = newWaiter(cmd.ID, nodeID, frame, true)
	wt.logs = make(chan []byte, bridgeBuffer)
	sess, err := srv.hub.register(wt)
	switch {
	case errors.Is(err, errNotConnected):
		writeError(w, http.StatusConflict, "node %s is not connected", nodeID)
		return nil, nil, nil, false
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "%v", err)
		return nil, nil, nil, false
	}
	return frame, wt, sess, true
}
