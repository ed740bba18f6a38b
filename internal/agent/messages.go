package agent

import (
	"context"
	"errors"
	"log/slog"

	"github.com/google/uuid"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/transport"
)

// errCancelled answers a command the server cancelled before it started.
var errCancelled = errors.New("cancelled by the server before it started")

// handleFrame handles one frame on the session's read goroutine. It never
// waits for a command: commands are queued, pings answered at once.
// Nothing a frame contains can end the connection or the agent.
func (a *Agent) handleFrame(s *session, f transport.Frame) {
	if f.Binary {
		a.log.Warn("binary frame ignored: the protocol uses text frames", "bytes", len(f.Data))
		return
	}
	hold, command, ok := a.admit(f.Data)
	if !ok {
		return
	}
	var msg protocol.Message
	var err error
	if command {
		msg, err = protocol.DecodeCommand(f.Data)
	} else {
		msg, err = protocol.Decode(f.Data)
	}
	if err != nil {
		hold.release()
		a.handleDecodeError(err, len(f.Data))
		return
	}
	switch m := msg.(type) {
	case protocol.Ping:
		s.pong()
	case protocol.Command:
		a.handleCommand(&m, hold)
	case protocol.Cancel:
		a.handleCancel(m)
	case protocol.TokenRefresh:
		a.handleTokenRefresh(m)
	case protocol.Stdin:
		a.consoleInput(m.CommandID, m, len(m.Data))
	case protocol.Resize:
		a.consoleInput(m.CommandID, m, 0)
	default:
		a.log.Debug("message type not expected from the server; ignored", "type", msg.MessageType())
	}
}

// handleDecodeError logs a frame that could not be decoded (never its
// content: a command's environment may hold secrets) and answers it with
// an invalid result when it is a command or carries an id.
func (a *Agent) handleDecodeError(err error, size int) {
	if errors.Is(err, protocol.ErrUnknownType) {
		a.log.Debug("unknown message type ignored", "err", err)
		return
	}
	a.log.Warn("malformed frame", "err", err, "bytes", size)
	var de *protocol.DecodeError
	if !errors.As(err, &de) || (de.ID == "" && de.Type != protocol.TypeCommand) {
		return
	}
	id := de.ID
	if id == "" {
		id = uuid.NewString()
	}
	res := protocol.Failure(id, protocol.Errorf(protocol.CodeInvalid, "%v", err), nil)
	a.deliver(id, res)
}

// handleCommand validates cmd, answers duplicates from the dedup table,
// takes room for it in the pending budget (hold: the room admit took for
// its frame, or nil) and queues it for the dispatcher; a command without
// room is answered with unavailable.
func (a *Agent) handleCommand(cmd *protocol.Command, hold *reservation) {
	queued := false
	defer func() {
		if !queued {
			hold.release()
		}
	}()
	if cmd.ID == "" {
		cmd.ID = uuid.NewString() // as the seed agent does
		a.log.Info("command without id: generated one", "commandId", cmd.ID, "action", cmd.Action)
	}
	// The command's logger is built only when a line is logged: With
	// formats its attributes at once, on every command.
	log := func() *slog.Logger {
		return a.log.With("commandId", cmd.ID, "action", cmd.Action, "containerId", cmd.ContainerID)
	}
	if a.draining.Load() {
		log().Info("command refused: shutting down")
		a.deliver(cmd.ID, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "%s; the command was not executed", errShuttingDown), nil))
		return
	}
	if err := cmd.Validate(); err != nil {
		log().Warn("invalid command", "err", err)
		a.deliver(cmd.ID, protocol.Failure(cmd.ID, err, nil))
		action := cmd.Action
		if !action.Known() {
			action = "unknown" // the server's string must not become a metric label
		}
		a.obs.CommandDone(action, protocol.StatusError, 0)
		return
	}
	switch state, stored := a.seen.lookup(cmd.ID); state {
	case seenDone:
		if a.outbox.holds(cmd.ID) {
			// The server resent a command after a reconnect, before it
			// read the result the agent sends again (or is sending): that
			// result reaches it anyway, confirmed or sent again on the
			// next connection. Another copy would be a duplicate.
			log().Info("duplicate command id: its result is on its way")
			a.obs.RepeatedCommand(RepeatInFlight)
			return
		}
		log().Info("duplicate command id: replaying the stored result")
		a.obs.RepeatedCommand(RepeatStored)
		a.outbox.push(cmd.ID, stored)
		return
	case seenRunning:
		log().Info("duplicate command id: already accepted; its result follows when it finishes")
		a.obs.RepeatedCommand(RepeatRunning)
		return
	case seenEvicted:
		log().Info("duplicate command id: already executed, its result no longer stored; answering conflict")
		a.obs.RepeatedCommand(RepeatConflict)
		a.deliver(cmd.ID, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeConflict,
			"command %s was already executed within the last hour and is not executed again; its result is no longer stored (the stored results exceeded RESULT_STORE_BYTES)",
			cmd.ID), nil))
		return
	}

	// Hold only what the action uses, and account for it as decoded.
	shed(cmd)
	key := laneKey(cmd.Action, cmd.ContainerID)
	cost := commandCost(cmd)
	rsv, err := hold, error(nil)
	if hold != nil && hold.key == key {
		err = hold.resize(cost)
	} else {
		hold.release()
		rsv, err = a.pending.reserve(key, cost)
	}
	if err != nil {
		a.refuse(cmd.ID, cmd.Action, err)
		return
	}
	queued = true
	a.seen.begin(cmd.ID)
	if a.log.Enabled(context.Background(), slog.LevelDebug) {
		log().Debug("command queued", "pendingBytes", cost)
	}
	if cmd.IsSession() { // exec, attach, stats follow: sessions.go
		a.submitSession(cmd, rsv)
		return
	}
	a.disp.submit(&job{
		id:  cmd.ID,
		key: key,
		rsv: rsv,
		run: func(ctx context.Context) { a.runCommand(ctx, cmd, rsv.release) },
		abort: func(reason error) {
			rsv.release()
			code := protocol.CodeUnavailable
			log().Info("command not started", "reason", reason)
			a.finish(cmd, protocol.Failure(cmd.ID, protocol.Errorf(code, "%s", reason), nil), 0)
		},
	})
}

// handleCancel ends a following log stream or aborts a command still
// queued. A running command is not interrupted.
// Cancels for unknown ids hold nothing; their log line is rate-limited and
// the id clipped, so a flood of them cannot flood the log.
func (a *Agent) handleCancel(m protocol.Cancel) {
	id := m.CommandID
	if len(id) > protocol.MaxCommandIDLength {
		id = clip(id, protocol.MaxCommandIDLength)
	}
	log := a.log.With("commandId", id)
	switch {
	case m.CommandID == "":
		log.Warn("cancel without commandId ignored")
	case a.streams.cancel(m.CommandID, errStreamCancelled):
		log.Info("log stream cancelled by the server")
	case a.disp.cancel(m.CommandID, errCancelled):
		log.Info("queued command cancelled by the server")
	default:
		if ok, suppressed := a.cancelLog.Allow(); ok {
			log.Info("cancel ignored: no log stream or queued command with that id (it may be running or done)",
				"ignoredSinceLastLog", suppressed)
		}
	}
}
