package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/server/store"
)

// Session timings.
const (
	writeTimeout      = 10 * time.Second // one frame to a slow agent
	closeWriteTimeout = 2 * time.Second  // the close frame
	outBuffer         = 64               // frames queued for the writer
	storeTimeout      = 5 * time.Second  // a database write from the read loop
)

// pingFrame is the application-level ping of the seed protocol.
var pingFrame = mustMarshal(protocol.Ping{})

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// session is one agent's live WebSocket connection. Frames to the agent go
// through out to a single writer goroutine that sets a write deadline on
// every frame, so a stalled agent costs the HTTP handlers at most a bounded
// wait and never blocks them forever.
type session struct {
	srv    *Server
	nodeID string
	name   string
	remote string
	conn   *gws.Conn
	log    *slog.Logger

	// The token the session runs on: the one it authenticated with, then
	// each one handed over in token_refresh. Guarded by tokMu.
	tokMu sync.Mutex
	jti   string
	iat   time.Time
	exp   time.Time // zero: no expiry

	// identified is closed at the first agent_identify; refreshable tells
	// whether it announced the token_refresh capability.
	identified   chan struct{}
	identifyOnce sync.Once
	refreshable  atomic.Bool

	out      chan []byte
	closeReq chan closeRequest // capacity 1; filled once by close
	done     chan struct{}     // closed when the connection has ended

	closeOnce sync.Once
	closing   atomic.Bool
	warnedID  atomic.Bool
	// warnedSize: an oversized heartbeat is logged once per session.
	warnedSize atomic.Bool
}

type closeRequest struct {
	code   uint16
	reason string
}

// sessionKey is where a *session is kept in the gws connection's storage.
const sessionKey = "session"

func sessionOf(c *gws.Conn) *session {
	v, _ := c.Session().Load(sessionKey)
	s, _ := v.(*session)
	return s
}

// send queues a frame for the writer. It fails when the session has ended
// or ctx is done first.
func (s *session) send(ctx context.Context, frame []byte) error {
	select {
	case s.out <- frame:
		return nil
	case <-s.done:
		return errNotConnected
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close ends the session with a close frame; it returns at once. The writer
// goroutine writes the frame, with a short deadline that also cuts short a
// write stuck on a stalled agent.
func (s *session) close(code uint16, reason string) {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		_ = s.conn.NetConn().SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		s.closeReq <- closeRequest{code, reason}
	})
}

// writeLoop is the session's only writer: queued frames, the periodic
// application ping, and finally the close frame.
func (s *session) writeLoop() {
	defer s.srv.hub.wg.Done()
	ping := time.NewTicker(s.srv.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case req := <-s.closeReq:
			s.writeClose(req)
			return
		default:
		}
		select {
		case req := <-s.closeReq:
			s.writeClose(req)
			return
		case <-s.done:
			return
		case f := <-s.out:
			if !s.write(f) {
				return
			}
		case <-ping.C:
			if !s.write(pingFrame) {
				return
			}
		}
	}
}

func (s *session) write(frame []byte) bool {
	_ = s.conn.NetConn().SetWriteDeadline(time.Now().Add(s.srv.writeTimeout))
	if s.closing.Load() {
		// close() may have shortened the deadline before ours; leave the
		// connection to the close frame.
		req := <-s.closeReq
		s.writeClose(req)
		return false
	}
	if err := s.conn.WriteMessage(gws.OpcodeText, frame); err != nil {
		// gws has closed the connection; OnClose follows.
		s.log.Debug("write to agent failed", "err", err)
		return false
	}
	if !s.closing.Load() {
		s.armIdleWriteDeadline()
	}
	return true
}

// armIdleWriteDeadline leaves a write deadline that stays ahead of the
// clock while the writer is idle. The read goroutine writes too (pongs, and
// gws's close frame for an oversized or broken frame); left with the expired
// deadline of the writer's last frame those writes fail at once, which drops
// the session or loses the close code. The writer writes at least a ping
// every PingInterval and re-arms it, so the deadline never runs out while
// the connection works, yet a write to a stalled agent stays bounded.
func (s *session) armIdleWriteDeadline() {
	_ = s.conn.NetConn().SetWriteDeadline(time.Now().Add(s.srv.cfg.PingInterval + s.srv.writeTimeout))
}

func (s *session) writeClose(req closeRequest) {
	_ = s.conn.NetConn().SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	_ = s.conn.WriteClose(req.code, []byte(req.reason))
}

func (s *session) refreshReadDeadline() {
	_ = s.conn.NetConn().SetReadDeadline(time.Now().Add(3 * s.srv.cfg.PingInterval))
}

// socketHandler receives gws events for every agent connection.
type socketHandler struct{ srv *Server }

func (h socketHandler) OnOpen(c *gws.Conn) {
	s := sessionOf(c)
	s.refreshReadDeadline()
	if !h.srv.hub.attach(s) {
		s.close(closeGoingAway, "server shutting down")
		return
	}
	// The token was checked before the upgrade; check again now that the
	// session is visible to rotation and deletion, so a rotation that
	// happened in between cannot leave a stale session open.
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	n, err := h.srv.store.Node(ctx, s.nodeID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.close(closeNodeDeleted, "node deleted")
		return
	case err != nil:
		s.log.Error("recheck node token", "err", err)
		s.close(closeInternalError, "server error")
		return
	case !tokenIsValidFor(n, s.tokenID()):
		s.close(closeTokenRotated, closeReasonRotated)
		return
	}
	s.log.Info("node connected")
	h.srv.hub.publish(s.nodeID, connectionEvent("connect", s.nodeID, s.remote, ""))
}

func (h socketHandler) OnClose(c *gws.Conn, err error) {
	s := sessionOf(c)
	close(s.done)
	h.srv.hub.detach(s)
	reason := closeReason(err)
	s.log.Info("node disconnected", "reason", reason)
	h.srv.hub.publish(s.nodeID, connectionEvent("disconnect", s.nodeID, s.remote, reason))
}

func closeReason(err error) string {
	var ce *gws.CloseError
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("agent closed the connection (%d %s)", ce.Code, ce.Reason)
	case err == nil || err.Error() == "":
		return "closed"
	default:
		return err.Error()
	}
}

// OnPing answers a WebSocket ping from the read goroutine, under the idle
// write deadline (see armIdleWriteDeadline).
func (h socketHandler) OnPing(c *gws.Conn, payload []byte) {
	sessionOf(c).refreshReadDeadline()
	_ = c.WritePong(payload)
}

func (h socketHandler) OnPong(c *gws.Conn, _ []byte) {
	sessionOf(c).refreshReadDeadline()
}

// OnMessage runs on the connection's read goroutine; everything it does is
// bounded (a database write, non-blocking fan-out, a log frame waits at most
// logBlockTimeout), so pings keep flowing.
func (h socketHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	s := sessionOf(c)
	s.refreshReadDeadline()
	if m.Opcode != gws.OpcodeText {
		s.log.Debug("ignoring binary frame from agent", "bytes", m.Data.Len())
		m.Close()
		return
	}
	frame := bytes.Clone(m.Bytes())
	m.Close()
	h.srv.handleFrame(s, frame)
}

// handleFrame acts on one agent -> server message.
func (srv *Server) handleFrame(s *session, frame []byte) {
	msg, err := protocol.Decode(frame)
	if err != nil {
		if errors.Is(err, protocol.ErrUnknownType) {
			s.log.Debug("ignoring unknown message type", "err", err)
		} else {
			s.log.Warn("malformed frame from agent", "err", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	switch m := msg.(type) {
	case protocol.Pong:
	case protocol.Ping:
		_ = s.send(ctx, mustMarshal(protocol.Pong{}))
	case protocol.AgentIdentify:
		info, version := json.RawMessage(mustMarshal(agentInfoOf(m))), m.Version
		if len(info) > maxStoredJSON {
			s.log.Warn("agent_identify too large to store; dropping it", "bytes", len(info), "limit", maxStoredJSON)
			info, version = nil, ""
		}
		if err := srv.store.RecordIdentify(ctx, s.nodeID, version, info); err != nil {
			s.log.Error("store agent_identify", "err", err)
		}
		s.log.Info("agent identified", "agent_version", m.Version, "hostname", m.Hostname,
			"protocol_version", m.ProtocolVersion)
		s.identifyOnce.Do(func() {
			s.refreshable.Store(slices.Contains(m.Capabilities, protocol.CapabilityTokenRefresh))
			close(s.identified)
		})
		srv.hub.publish(s.nodeID, rawEvent(m.MessageType(), frame))
		srv.hub.resend(s)
	case protocol.Heartbeat:
		if m.NodeID != s.nodeID && s.warnedID.CompareAndSwap(false, true) {
			// The value is not logged: the seed's agent sends the first
			// characters of its token as nodeId.
			s.log.Warn("heartbeat names another node id; recording it for the authenticated node")
		}
		resources, whole := storedResources(frame, m.Resources)
		if !whole && s.warnedSize.CompareAndSwap(false, true) {
			s.log.Warn("heartbeat resources too large to store; keeping the known fields only",
				"limit", maxStoredJSON)
		}
		if err := srv.store.RecordHeartbeat(ctx, s.nodeID, srv.now(), resources); err != nil {
			s.log.Error("store heartbeat", "err", err)
		}
		srv.hub.publish(s.nodeID, rawEvent(m.MessageType(), frame))
	case protocol.CommandResult:
		delivered := srv.hub.deliverResult(s.nodeID, m.CommandID, frame)
		if !srv.hub.firstResult(s.nodeID, m.CommandID) && !delivered {
			s.log.Debug("repeated command_result ignored: the first one counted", "command_id", m.CommandID)
			return
		}
		if !delivered {
			s.log.Debug("command_result nobody is waiting for", "command_id", m.CommandID, "status", m.Status)
		}
		srv.hub.publish(s.nodeID, rawEvent(m.MessageType(), frame))
	case protocol.LogMessage:
		srv.hub.deliverLog(s.nodeID, m.CommandID, frame)
	case protocol.Stream: // console output (console.go)
		srv.hub.deliverLog(s.nodeID, m.CommandID, frame)
	case protocol.StatsSample:
		srv.hub.deliverLog(s.nodeID, m.CommandID, frame)
	case protocol.CommandProgress, protocol.ContainerEvent, protocol.Inventory:
		srv.hub.publish(s.nodeID, rawEvent(msg.MessageType(), frame))
	default:
		s.log.Debug("ignoring message the server does not expect", "type", msg.MessageType())
	}
}

// maxStoredJSON bounds what the server stores per node from an agent's
// agent_identify and heartbeat, and so the size of every node object the
// API returns: a frame may be up to MAX_MESSAGE_BYTES.
const maxStoredJSON = 16 << 10

// storedResources is a heartbeat's resources object as stored: the raw JSON,
// which keeps the fields newer agents add, unless it is larger than
// maxStoredJSON; then only the fields this server knows, or nil when even
// those are too large. whole reports whether nothing was left out.
func storedResources(frame []byte, known protocol.HostResources) (resources json.RawMessage, whole bool) {
	raw := rawField(frame, "resources")
	if raw != nil && len(raw) <= maxStoredJSON {
		return raw, true
	}
	typed, _ := json.Marshal(known)
	if len(typed) > maxStoredJSON {
		return nil, false
	}
	return typed, raw == nil
}

// rawField returns the raw JSON of one top-level field of frame, or nil.
func rawField(frame []byte, name string) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(frame, &fields) != nil {
		return nil
	}
	return fields[name]
}

// agentInfo is what the server keeps from agent_identify.
type agentInfo struct {
	NodeName        string               `json:"nodeName,omitempty"`
	Version         string               `json:"version,omitempty"`
	ProtocolVersion int                  `json:"protocolVersion,omitempty"`
	Capabilities    []string             `json:"capabilities,omitempty"`
	Hostname        string               `json:"hostname,omitempty"`
	OS              string               `json:"os,omitempty"`
	Arch            string               `json:"arch,omitempty"`
	Engine          *protocol.EngineInfo `json:"engine,omitempty"`
}

func agentInfoOf(m protocol.AgentIdentify) agentInfo {
	return agentInfo{NodeName: m.NodeName, Version: m.Version, ProtocolVersion: m.ProtocolVersion,
		Capabilities: m.Capabilities, Hostname: m.Hostname, OS: m.OS, Arch: m.Arch, Engine: m.Engine}
}

// gwsLogger routes gws's own error logs (recovered panics) to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) {
	l.log.Error("websocket library error", "detail", fmt.Sprint(v...))
}
