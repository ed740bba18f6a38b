package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
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
	outBuffer         = 16               // frames queued for the writer
	storeTimeout      = 5 * time.Second  // a database write from the read loop
)

// pingFrame is the application-level ping of the seed protocol, pongFrame
// its answer.
var (
	pingFrame = mustMarshal(protocol.Ping{})
	pongFrame = mustMarshal(protocol.Pong{})
)

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// session is one agent's live WebSocket connection. Frames to the agent go
// through out to a writer goroutine that sets a write deadline on every
// frame, so a stalled agent costs the HTTP handlers at most a bounded wait
// and never blocks them forever. The writer runs only while there is
// something to write (kick starts it, it ends when out is empty): an idle
// session holds one goroutine, its reader, and the memory of a fleet of
// mostly idle agents is mostly their read loops.
type session struct {
	srv    *Server
	nodeID string
	name   string
	remote string
	conn   *gws.Conn
	log    sessionLog

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

	// wmu guards writer and ended. The session's goroutines besides its
	// read loop (the writer, a lifetime timer's work, a resend) are
	// counted in wg, and start only while ended is false: the read loop
	// waits for them once it has ended, so no Add races that Wait.
	wmu    sync.Mutex
	writer bool // a writer goroutine runs, or the writer is done for good
	ended  bool // the read loop has returned
	wg     sync.WaitGroup

	life lifetimeTimer // token expiry and refresh (lifetime.go)

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

// sessionLog logs with the session's node, name and remote address. The
// logger is built for each line rather than once per session: a logger
// with attributes costs memory on every connection, lines are rare.
type sessionLog struct{ s *session }

func (l sessionLog) logger() *slog.Logger {
	return l.s.srv.log.With("node", l.s.nodeID, "node_name", l.s.name, "remote", l.s.remote)
}

func (l sessionLog) Debug(msg string, args ...any) {
	if l.s.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		l.logger().Debug(msg, args...)
	}
}
func (l sessionLog) Info(msg string, args ...any)  { l.logger().Info(msg, args...) }
func (l sessionLog) Warn(msg string, args ...any)  { l.logger().Warn(msg, args...) }
func (l sessionLog) Error(msg string, args ...any) { l.logger().Error(msg, args...) }

// sessionKey is where a *session is kept in the gws connection's storage.
const sessionKey = "session"

func sessionOf(c *gws.Conn) *session {
	v, _ := c.Session().Load(sessionKey)
	s, _ := v.(*session)
	return s
}

// sessionStorage is gws's per-connection storage, made for the one entry
// the server keeps (the session): gws's default is a map with a mutex of
// its own on every connection. Other keys go to a map made on first use.
type sessionStorage struct {
	mu    sync.Mutex
	key   string
	value any
	set   bool
	more  map[string]any
}

func (st *sessionStorage) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := len(st.more)
	if st.set {
		n++
	}
	return n
}

func (st *sessionStorage) Load(key string) (any, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.set && key == st.key {
		return st.value, true
	}
	v, ok := st.more[key]
	return v, ok
}

func (st *sessionStorage) Delete(key string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.set && key == st.key {
		st.set, st.value = false, nil
		return
	}
	delete(st.more, key)
}

func (st *sessionStorage) Store(key string, value any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case !st.set && st.more[key] == nil:
		st.key, st.value, st.set = key, value, true
	case st.set && key == st.key:
		st.value = value
	default:
		if st.more == nil {
			st.more = map[string]any{}
		}
		st.more[key] = value
	}
}

func (st *sessionStorage) Range(f func(key string, value any) bool) {
	st.mu.Lock()
	entries := make(map[string]any, len(st.more)+1)
	for k, v := range st.more {
		entries[k] = v
	}
	if st.set {
		entries[st.key] = st.value
	}
	st.mu.Unlock()
	for k, v := range entries {
		if !f(k, v) {
			return
		}
	}
}

// send queues a frame for the writer. It fails when the session has ended
// or ctx is done first.
func (s *session) send(ctx context.Context, frame []byte) error {
	select {
	case s.out <- frame:
		s.kick()
		return nil
	case <-s.done:
		return errNotConnected
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trySend queues a frame unless the queue is full (the agent reads slowly:
// a ping is pointless then); it reports whether it did.
func (s *session) trySend(frame []byte) bool {
	select {
	case s.out <- frame:
		s.kick()
		return true
	default:
		return false
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
		s.kick()
	})
}

// spawn runs f on a goroutine of the session unless the session's read
// loop has ended (then the connection is gone and there is nothing left to
// do); it reports whether it did.
func (s *session) spawn(f func()) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ended {
		return false
	}
	s.wg.Go(f)
	return true
}

// readLoopEnded is called once the read loop has returned: no goroutine of
// the session starts after it, and it waits for those that run, so the
// hub's count of the session ends with the last of them.
func (s *session) readLoopEnded() {
	s.wmu.Lock()
	s.ended = true
	s.wmu.Unlock()
	s.life.stop()
	s.wg.Wait()
}

// kick starts the writer unless it runs.
func (s *session) kick() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writer || s.ended {
		return
	}
	s.writer = true
	s.wg.Go(s.writeQueued)
}

// writeQueued writes queued frames, and finally the close frame, until
// nothing is queued; then it ends (a later send starts a new one). After
// the close frame or a failed write it marks the writer done for good.
func (s *session) writeQueued() {
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
		default:
			s.wmu.Lock()
			s.writer = false
			s.wmu.Unlock()
			// A frame queued after the check above found no writer
			// running and started none: look again.
			if len(s.out) > 0 || len(s.closeReq) > 0 {
				s.kick()
			}
			return
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
// the session or loses the close code. The pinger queues at least a ping
// every PingInterval, whose write re-arms it, so the deadline never runs out
// while the connection works, yet a write to a stalled agent stays bounded.
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
	onOwnStack(func() { h.open(s) })
}

// onOwnStack runs f on a goroutine of its own and waits for it. A read
// loop's stack is held by every connected agent for as long as it is
// connected, and stays as deep as the deepest work it did until collections
// shrink it again, one halving per cycle: the once-per-session work that
// needs a deep stack (the database, encoding/json, logging) runs on a stack
// that is freed at once. A panic in f is raised again in the caller, with
// the stack where it happened (an ownStackPanic): on a frame's handling gws
// recovers and logs it as before; in OnOpen, which gws calls outside its
// recovery, it ends the process as before.
func onOwnStack(f func()) {
	var p *ownStackPanic
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				p = &ownStackPanic{value: v, stack: debug.Stack()}
			}
		}()
		f()
	}()
	<-done
	if p != nil {
		panic(p)
	}
}

// ownStackPanic is a panic of onOwnStack's function raised again in its
// caller, whose own stack ends at onOwnStack.
type ownStackPanic struct {
	value any
	stack []byte
}

func (p *ownStackPanic) Error() string { return fmt.Sprintf("%v\n\n%s", p.value, p.stack) }

// open makes s the node's live session once its token is checked again.
func (h socketHandler) open(s *session) {
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
	h.srv.handleText(s, m.Bytes())
	m.Close()
}

// handleText acts on a text frame whose data is the library's buffer,
// valid only during the call: what is kept of it is copied.
func (srv *Server) handleText(s *session, data []byte) {
	if bytes.Equal(data, pongFrame) {
		// A pong as agents write it, a good part of a fleet's frames:
		// nothing to keep, nothing to copy.
		return
	}
	// Heartbeats, nearly all the rest, are not taken through handleFrame's
	// large frame: the read loop's stack stays small (it is held by every
	// connected agent, and copied when it grows). Those the scan does not
	// take (written otherwise than agents write them, or too large to store
	// whole) take the general path.
	if bytes.Contains(data, heartbeatType) {
		if nodeID, raw, ok := scanHeartbeat(data); ok && len(raw) <= maxStoredJSON {
			// Only the resources are kept; event streams copy the frame.
			srv.recordHeartbeatAs(s, data, string(nodeID) == s.nodeID, bytes.Clone(raw))
			return
		}
	}
	frame := bytes.Clone(data)
	select {
	case <-s.identified:
		srv.handleFrame(s, frame)
	default:
		// Before the agent has identified itself, which every session
		// does once: its agent_identify is decoded, logged and stored on
		// a stack of its own (see onOwnStack).
		onOwnStack(func() { srv.handleFrame(s, frame) })
	}
}

// handleFrame acts on one agent -> server message: the general path, for
// the frames handleText does not take itself.
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
	switch m := msg.(type) {
	case protocol.Pong:
	case protocol.Ping:
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_ = s.send(ctx, pongFrame)
		cancel()
	case protocol.AgentIdentify:
		info, version := json.RawMessage(mustMarshal(agentInfoOf(m))), m.Version
		if len(info) > maxStoredJSON {
			s.log.Warn("agent_identify too large to store; dropping it", "bytes", len(info), "limit", maxStoredJSON)
			info, version = nil, ""
		}
		srv.reports.identify(s.nodeID, version, info)
		s.log.Info("agent identified", "agent_version", m.Version, "hostname", m.Hostname,
			"protocol_version", m.ProtocolVersion)
		s.identifyOnce.Do(func() {
			s.refreshable.Store(slices.Contains(m.Capabilities, protocol.CapabilityTokenRefresh))
			close(s.identified)
			s.armLifetime() // with the capability known
		})
		srv.hub.publishRaw(s.nodeID, m.MessageType(), frame)
		srv.hub.resend(s)
	case protocol.Heartbeat:
		srv.recordHeartbeat(s, frame, m.NodeID, rawResources(frame), m.Resources)
	case protocol.CommandResult:
		delivered := srv.hub.deliverResult(s.nodeID, m.CommandID, frame)
		if !srv.hub.firstResult(s.nodeID, m.CommandID) && !delivered {
			s.log.Debug("repeated command_result ignored: the first one counted", "command_id", m.CommandID)
			return
		}
		if !delivered {
			s.log.Debug("command_result nobody is waiting for", "command_id", m.CommandID, "status", m.Status)
		}
		srv.hub.publishRaw(s.nodeID, m.MessageType(), frame)
	case protocol.LogMessage:
		srv.hub.deliverLog(s.nodeID, m.CommandID, frame)
	case protocol.Stream: // console output (console.go)
		srv.hub.deliverLog(s.nodeID, m.CommandID, frame)
	case protocol.StatsSample:
		srv.hub.deliverLog(s.nodeID, m.CommandID, frame)
	case protocol.CommandProgress, protocol.ContainerEvent, protocol.Inventory:
		srv.hub.publishRaw(s.nodeID, msg.MessageType(), frame)
	default:
		s.log.Debug("ignoring message the server does not expect", "type", msg.MessageType())
	}
}

// heartbeatType is in every heartbeat frame (unless its type is written
// with escapes, which the general path decodes).
var heartbeatType = []byte(`"` + protocol.TypeHeartbeat + `"`)

// recordHeartbeat keeps a heartbeat (raw: its resources as sent, known: as
// this server reads them) and publishes it to the node's event streams.
func (srv *Server) recordHeartbeat(s *session, frame []byte, nodeID string, raw json.RawMessage, known protocol.HostResources) {
	resources, whole := storedResources(raw, known)
	if !whole && s.warnedSize.CompareAndSwap(false, true) {
		s.log.Warn("heartbeat resources too large to store; keeping the known fields only",
			"limit", maxStoredJSON)
	}
	srv.recordHeartbeatAs(s, frame, nodeID == s.nodeID, resources)
}

// recordHeartbeatAs keeps a heartbeat's resources as stored and publishes
// it (frame is not kept); ownID tells whether its nodeId is the session's
// node.
func (srv *Server) recordHeartbeatAs(s *session, frame []byte, ownID bool, resources json.RawMessage) {
	if !ownID && s.warnedID.CompareAndSwap(false, true) {
		// The value is not logged: the seed's agent sends the first
		// characters of its token as nodeId.
		s.log.Warn("heartbeat names another node id; recording it for the authenticated node")
	}
	srv.reports.heartbeat(s.nodeID, srv.now(), resources)
	srv.hub.publishRaw(s.nodeID, protocol.TypeHeartbeat, frame)
}

// maxStoredJSON bounds what the server stores per node from an agent's
// agent_identify and heartbeat, and so the size of every node object the
// API returns: a frame may be up to MAX_MESSAGE_BYTES.
const maxStoredJSON = 16 << 10

// storedResources is a heartbeat's resources object as stored: the raw JSON
// (raw, nil when absent), which keeps the fields newer agents add, unless it
// is larger than maxStoredJSON; then only the fields this server knows, or
// nil when even those are too large. whole reports whether nothing was left
// out.
func storedResources(raw json.RawMessage, known protocol.HostResources) (resources json.RawMessage, whole bool) {
	if raw != nil && len(raw) <= maxStoredJSON {
		return raw, true
	}
	typed, _ := json.Marshal(known)
	if len(typed) > maxStoredJSON {
		return nil, false
	}
	return typed, raw == nil
}

// rawResources returns a heartbeat frame's resources object as sent (nil
// when absent), its key matched as encoding/json matches it to the field.
func rawResources(frame []byte) json.RawMessage {
	var hb struct {
		Resources json.RawMessage `json:"resources"`
	}
	if json.Unmarshal(frame, &hb) != nil {
		return nil
	}
	return hb.Resources
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
