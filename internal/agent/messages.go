package agent

import (
	"context"
	"errors"

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
	msg, err := protocol.Decode(f.Data)
	if err != nil {
		a.handleDecodeError(err, len(f.Data))
		return
	}
	switch m := msg.(type) {
	case protocol.Ping:
		s.pong()
	case protocol.Command:
		a.handleCommand(&m)
	case protocol.Cancel:
		a.handleCancel(m)
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
		id = newCommandID()
	}
	res := protocol.Failure(id, protocol.Errorf(protocol.CodeInvalid, "%v", err), nil)
	a.deliver(id, res)
}

// handleCommand validates cmd, answers duplicates from the dedup table and
// queues the rest for the dispatcher.
func (a *Agent) handleCommand(cmd *protocol.Command) {
	if cmd.ID == "" {
		cmd.ID = newCommandID()
		a.log.Info("command without id: generated one", "commandId", cmd.ID, "action", cmd.Action)
	}
	log := a.log.With("commandId", cmd.ID, "action", cmd.Action, "containerId", cmd.ContainerID)
	if a.draining.Load() {
		log.Info("command refused: shutting down")
		a.deliver(cmd.ID, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "%s; the command was not executed", errShuttingDown), nil))
		return
	}
	if err := cmd.Validate(); err != nil {
		log.Warn("invalid command", "err", err)
		a.deliver(cmd.ID, protocol.Failure(cmd.ID, err, nil))
		action := cmd.Action
		if !action.Known() {
			action = "unknown" // the server's string must not become a metric label
		}
		a.obs.CommandDone(action, protocol.StatusError, 0)
		return
	}
	if n := a.disp.count(); n >= maxPending {
		log.Warn("command refused: too many commands in flight", "inFlight", n)
		a.deliver(cmd.ID, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "agent busy: %d commands in flight; retry later", n), nil))
		return
	}
	switch state, stored := a.seen.begin(cmd.ID); state {
	case seenDone:
		log.Info("duplicate command id: replaying the stored result")
		a.outbox.push(cmd.ID, stored)
		return
	case seenRunning:
		log.Info("duplicate command id: already accepted; its result follows when it finishes")
		return
	}
	log.Debug("command queued")
	if cmd.IsSession() { // exec, attach, stats follow: sessions.go
		a.submitSession(cmd)
		return
	}
	key := cmd.ContainerID
	if cmd.Action == protocol.ActionList {
		key = ""
	}
	a.disp.submit(&job{
		id:  cmd.ID,
		key: key,
		run: func(ctx context.Context) { a.runCommand(ctx, cmd) },
		abort: func(reason error) {
			code := protocol.CodeUnavailable
			log.Info("command not started", "reason", reason)
			a.finish(cmd, protocol.Failure(cmd.ID, protocol.Errorf(code, "%s", reason), nil), 0)
		},
	})
}

// handleCancel ends a following log stream or aborts a command still
// queued. A running command is not interrupted.
func (a *Agent) handleCancel(m protocol.Cancel) {
	log := a.log.With("commandId", m.CommandID)
	switch {
	case m.CommandID == "":
		log.Warn("cancel without commandId ignored")
	case a.streams.cancel(m.CommandID, errStreamCancelled):
		log.Info("log stream cancelled by the server")
	case a.disp.cancel(m.CommandID, errCancelled):
		log.Info("queued command cancelled by the server")
	default:
		log.Info("cancel ignored: no log stream or queued command with that id (it may be running or done)")
	}
}
