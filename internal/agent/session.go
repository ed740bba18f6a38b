package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/transport"
)

// session is one identified connection: it owns the goroutines that read
// frames, write the outbox and send heartbeats, all ended and waited for
// when the connection ends.
type session struct {
	a         *Agent
	conn      *transport.Conn
	ctx       context.Context // ends with the connection
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	opened    chan struct{} // closed once identify and inventory are out
	flushed   chan struct{} // closed when the outbox was first seen empty
	flushOnce sync.Once
	pumpMu    sync.Mutex  // held while writing the outbox (pumpOutbox, flush)
	pumping   atomic.Bool // pumpOutbox runs: flush may write
	epoch     uint64      // the outbox's epoch of this connection (outbox.rewind)
}

var pongFrame = []byte(`{"type":"pong"}`)

// runSession identifies on conn and serves it until it ends or ctx is
// cancelled (then it shuts down gracefully). It returns why the connection
// ended.
func (a *Agent) runSession(ctx context.Context, conn *transport.Conn) error {
	sctx, cancel := context.WithCancel(context.Background())
	s := &session{a: a, conn: conn, ctx: sctx, cancel: cancel, opened: make(chan struct{}), flushed: make(chan struct{})}
	s.spawn(func() {
		select {
		case <-conn.Done():
			cancel()
		case <-sctx.Done():
		}
	})

	// On open: agent_identify, then inventory, then queued results, then
	// heartbeats (docs/protocol.md). Frames are read from identify on, so pings are
	// answered while the inventory is gathered.
	ictx, icancel := context.WithTimeout(sctx, a.tm.writeTimeout)
	err := s.send(ictx, a.identifyMessage(sctx))
	icancel()
	if err == nil {
		a.mu.Lock()
		a.sess = s
		a.mu.Unlock()
		a.obs.Connected(true)
		a.log.Info("connected", "server", endpoint.Redact(a.server.String()), "nodeId", a.currentNodeID())
		s.spawn(s.readFrames)
		if a.opts.StatusEvents {
			s.sendInventory(InventoryIdentify)
		}
		close(s.opened)
		// The start-up work is done (configuration, Docker client,
		// identify, inventory); its garbage would stay mapped until the
		// heap next grows. One forced collection returns it to the
		// operating system: about 2 MiB of an idle agent's 17.
		a.settled.Do(func() { s.spawn(debug.FreeOSMemory) })
		// Results not confirmed on earlier connections go out again first.
		s.epoch = a.outbox.rewind()
		s.pumping.Store(true)
		s.spawn(s.pumpOutbox)
		s.spawn(s.heartbeats)

		select {
		case <-conn.Done():
		case <-ctx.Done():
			s.shutdown()
		}
		a.mu.Lock()
		a.sess = nil
		a.mu.Unlock()
		a.obs.Connected(false)
	} else {
		err = fmt.Errorf("send agent_identify: %w", err)
	}

	cancel()
	_ = conn.Close(transport.CloseNormal, "")
	s.wg.Wait()
	// Why the connection ended, unless the agent closed it itself because
	// identify failed: then that failure is the reason.
	cerr := conn.Err()
	var ce *transport.CloseError
	if err != nil && errors.As(cerr, &ce) && ce.Local {
		return err
	}
	return cerr
}

func (s *session) spawn(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// shutdown ends the session gracefully (docs/protocol.md): no new commands,
// in-flight ones finish (bounded), their results are flushed, then the
// socket is closed with 1001.
func (s *session) shutdown() {
	a := s.a
	a.log.Info("shutting down: waiting for in-flight commands", "count", a.disp.count(), "timeout", a.opts.ShutdownTimeout)
	a.stopCommands()
	flush := time.NewTimer(a.tm.flushTimeout)
	defer flush.Stop()
	select {
	case <-a.outbox.empty(): // every result written and confirmed
	case <-s.ctx.Done():
	case <-flush.C:
	}
	if n := a.outbox.len(); n > 0 {
		a.log.Warn("shutdown: results not flushed in time", "count", n)
	}
	if err := s.conn.Close(transport.CloseGoingAway, "agent shutting down"); err != nil {
		a.log.Debug("close", "err", err)
	}
}

// waitOpen waits until identify and inventory are out, so that events,
// progress and log lines never go before them (docs/protocol.md); false when ctx or
// the session ended first.
func (s *session) waitOpen(ctx context.Context) bool {
	select {
	case <-s.opened:
		return true
	case <-ctx.Done():
		return false
	case <-s.ctx.Done():
		return false
	}
}

// send encodes m and writes it, waiting for room in the send queue.
func (s *session) send(ctx context.Context, m protocol.Message) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.MessageType(), err)
	}
	return s.conn.Send(ctx, data)
}

// pong answers an application-level ping through the priority lane.
func (s *session) pong() {
	if err := s.conn.SendPriority(pongFrame); err != nil {
		s.a.log.Debug("pong not sent", "err", err)
	}
}

func (s *session) readFrames() {
	for f := range s.conn.Frames() {
		s.a.handleFrame(s, f)
	}
}

// pumpOutbox writes queued results in order, and removes them once the
// server confirms it read them (a pong to a ping written after them); a
// result not confirmed when the connection dies is sent again on the next
// one.
func (s *session) pumpOutbox() {
	defer s.pumping.Store(false)
	ob := s.a.outbox
	for {
		s.pumpMu.Lock()
		ok := s.drain()
		s.pumpMu.Unlock()
		if !ok {
			return
		}
		s.flushOnce.Do(func() { close(s.flushed) })
		select {
		case <-ob.wait():
		case <-s.conn.AckNotify():
			ob.confirm(s.epoch, s.conn.Acked())
		case <-s.ctx.Done():
			return
		}
	}
}

// flush writes the outbox on the caller's goroutine (the one that just
// queued a result) unless pumpOutbox is writing it already: a command
// result then goes out without waiting for pumpOutbox to be scheduled.
// It never waits for the pump; whatever it leaves, pumpOutbox writes once
// woken (outbox.signal), which the caller does when flush reports false.
// Only one goroutine writes at a time (pumpMu), so a server that stops
// reading holds at most that one command's slot, for at most the write
// timeout after which the connection is given up.
func (s *session) flush() bool {
	if !s.pumping.Load() || !s.pumpMu.TryLock() {
		return false
	}
	defer s.pumpMu.Unlock()
	if !s.pumping.Load() {
		return false
	}
	s.drain()
	return true
}

// drain writes the outbox until nothing is left to write (true) or the
// connection fails (false), then asks the server to confirm what it wrote.
// Call with pumpMu held.
func (s *session) drain() bool {
	ob := s.a.outbox
	wrote, resent := 0, 0
	defer func() {
		if wrote > 0 {
			s.conn.RequestAck()
		}
		if resent > 0 {
			s.a.obs.ResultsResent(resent)
			s.a.log.Info("results sent again: the previous connection ended before the server confirmed reading them",
				"count", resent)
		}
	}()
	for {
		it, ok := ob.next(s.epoch)
		if !ok {
			return true
		}
		pos, err := s.conn.SendTracked(s.ctx, it.data)
		switch {
		case err == nil:
			wrote++
			if ob.wrote(s.epoch, it.seq, pos) {
				resent++
			}
		case errors.Is(err, transport.ErrFrameTooLarge):
			s.a.log.Error("result too large to send; dropped", "commandId", it.commandID, "err", err)
			ob.remove(s.epoch, it.seq)
		default:
			return false
		}
	}
}

// heartbeats sends a heartbeat once the queued results are out, then every
// HeartbeatInterval. Heartbeats are never queued across disconnects.
func (s *session) heartbeats() {
	select {
	case <-s.flushed:
	case <-s.ctx.Done():
		return
	}
	t := time.NewTicker(s.a.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		s.a.beat(s)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
	}
}

// identifyMessage builds agent_identify; a failing engine leaves out
// engine but never prevents identifying.
func (a *Agent) identifyMessage(ctx context.Context) protocol.AgentIdentify {
	caps := slices.Clone(protocol.Capabilities)
	if !a.opts.StatusEvents {
		caps = slices.DeleteFunc(caps, func(c string) bool { return c == "container_event" || c == "inventory" })
	}
	if a.opts.RefreshedTokens != nil {
		caps = append(caps, protocol.CapabilityTokenRefresh)
	}
	host, _ := os.Hostname()
	msg := protocol.AgentIdentify{
		NodeName:        a.opts.NodeName,
		Version:         a.opts.Version,
		ProtocolVersion: protocol.Version,
		Capabilities:    caps,
		Hostname:        host,
		OS:              runtime.GOOS,
		Arch:            runtime.GOARCH,
	}
	// The server waits for identify: do not let a hung engine hold it long.
	ctx, cancel := context.WithTimeout(ctx, identifyTimeout)
	defer cancel()
	info, err := a.opts.Runtime.Info(ctx)
	a.setRuntimeErr(err)
	if err != nil {
		a.log.Warn("container engine unreachable: identifying without engine details", "err", err)
	} else {
		msg.Engine = &info
	}
	return msg
}

// sendInventory lists the managed containers so the server can reconcile
// (reason: one of the Inventory* constants, for the metrics). When the
// engine does not answer no inventory is sent: an empty one would tell the
// server every container is gone.
func (s *session) sendInventory(reason string) {
	ctx, cancel := context.WithTimeout(s.ctx, callTimeout)
	defer cancel()
	items, err := s.a.opts.Runtime.List(ctx)
	s.a.setRuntimeErr(err)
	if err != nil {
		s.a.log.Warn("inventory not sent: container engine unreachable", "err", err)
		return
	}
	if err := s.send(ctx, protocol.Inventory{Containers: items}); err != nil {
		s.a.log.Warn("inventory not sent", "err", err, "containers", len(items))
		return
	}
	s.a.obs.InventorySent(reason)
}
