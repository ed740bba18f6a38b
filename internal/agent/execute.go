package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// runCommand executes a validated command and delivers its result. A panic
// in the runtime becomes an internal error result, never a crash. release
// frees the command's room in the pending budget before its result is
// delivered (a log stream is bounded by maxStreams instead).
func (a *Agent) runCommand(ctx context.Context, cmd *protocol.Command, release func()) {
	if cmd.Action == protocol.ActionLogs && cmd.Follow {
		release()
		a.startFollow(ctx, cmd)
		return
	}
	start := time.Now()
	res := a.execute(ctx, cmd)
	release()
	a.finish(cmd, res, time.Since(start))
}

// execute maps one validated command to the Runtime, passing only its
// operation's arguments, and builds its command_result (docs/protocol.md).
func (a *Agent) execute(ctx context.Context, cmd *protocol.Command) (res *protocol.CommandResult) {
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("command panicked", "commandId", cmd.ID, "action", cmd.Action, "panic", p, "stack", string(debug.Stack()))
			res = protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeInternal, "internal error while running %s: %v", cmd.Action, p), nil)
		}
	}()
	rt := a.opts.Runtime
	id := cmd.ContainerID
	var (
		result   any
		warnings []string
		err      error
	)
	switch cmd.Action {
	case protocol.ActionCreate:
		var (
			p protocol.CreateParams
			r protocol.CreateResult
		)
		if p, err = cmd.CreateParams(); err == nil {
			r, warnings, err = rt.Create(ctx, p, a.progress(cmd))
		}
		result = r
	case protocol.ActionStart:
		err = rt.Start(ctx, id)
		result = protocol.MessageResult{Message: protocol.MsgStarted}
	case protocol.ActionStop:
		err = rt.Stop(ctx, id, cmd.Timeout)
		result = protocol.MessageResult{Message: protocol.MsgStopped}
	case protocol.ActionRestart:
		err = rt.Restart(ctx, id, cmd.Timeout)
		result = protocol.MessageResult{Message: protocol.MsgRestarted}
	case protocol.ActionKill:
		signal := cmd.Signal
		if signal == "" {
			signal = "SIGKILL"
		}
		err = rt.Kill(ctx, id, signal)
		result = protocol.MessageResult{Message: protocol.MsgKilled}
	case protocol.ActionDelete:
		var absent bool
		absent, err = rt.Delete(ctx, id)
		result = protocol.MessageResult{Message: protocol.MsgDeleted, AlreadyAbsent: absent}
	case protocol.ActionLogs:
		var (
			p     protocol.LogsParams
			lines []string
		)
		if p, err = cmd.LogsParams(); err == nil {
			lines, err = rt.Logs(ctx, p)
		}
		if lines == nil {
			lines = []string{}
		}
		result = protocol.LogsResult{Logs: lines}
	case protocol.ActionInspect:
		result, err = rt.Inspect(ctx, id)
	case protocol.ActionList:
		var items []protocol.InventoryItem
		items, err = rt.List(ctx)
		if items == nil {
			items = []protocol.InventoryItem{}
		}
		result = protocol.ListResult{Containers: items}
	case protocol.ActionStats:
		result, err = rt.Stats(ctx, id)
	case protocol.ActionUpdate:
		var l protocol.Limits
		if l, err = cmd.UpdateLimits(); err == nil {
			warnings, err = rt.Update(ctx, id, l)
		}
		result = protocol.MessageResult{Message: protocol.MsgUpdated}
	default: // Validate refuses unknown actions; kept for safety
		err = protocol.Errorf(protocol.CodeInvalid, "unknown action %q", cmd.Action)
	}
	if err != nil {
		a.runtimeFailed(cmd.Action, err)
		return protocol.Failure(cmd.ID, err, warnings)
	}
	return protocol.Success(cmd.ID, result, warnings)
}

// runtimeFailed counts engine-side failures (not the caller's mistakes).
func (a *Agent) runtimeFailed(action protocol.Action, err error) {
	switch protocol.CodeOf(err) {
	case protocol.CodeInternal, protocol.CodeUnavailable, protocol.CodeTimeout:
		a.obs.RuntimeError(action)
	}
}

// finish records and delivers the result of a command that was accepted.
func (a *Agent) finish(cmd *protocol.Command, res *protocol.CommandResult, took time.Duration) {
	data := a.encodeResult(res)
	a.seen.complete(cmd.ID, data)
	a.outbox.add(cmd.ID, data)
	if s := a.current(); s == nil || !s.flush() {
		a.outbox.signal()
	}
	a.obs.CommandDone(cmd.Action, res.Status, took)
	if res.Status == protocol.StatusSuccess {
		a.log.Info("command done", "commandId", cmd.ID, "action", cmd.Action, "containerId", cmd.ContainerID,
			"took", took.Round(time.Millisecond), "warnings", len(res.Warnings))
	} else {
		a.log.Warn("command failed", "commandId", cmd.ID, "action", cmd.Action, "containerId", cmd.ContainerID,
			"took", took.Round(time.Millisecond), "code", res.Code, "err", res.Error)
	}
}

// deliver queues a result of a command that was not accepted (invalid,
// refused): it is not remembered for duplicates.
func (a *Agent) deliver(commandID string, res *protocol.CommandResult) {
	a.outbox.push(commandID, a.encodeResult(res))
}

// encodeResult marshals res so that it fits in one frame: a logs result
// too large loses its earliest lines (with a warning), an exec result its
// output's ends (by the exec output rule, truncated: true: a
// MAX_MESSAGE_BYTES below the default), anything else too large becomes an
// internal error.
func (a *Agent) encodeResult(res *protocol.CommandResult) []byte {
	limit := a.opts.MaxMessageBytes
	// MarshalJSON directly: json.Marshal would scan and copy its output
	// twice more (compact, then copy), the same bytes in the end.
	data, err := res.MarshalJSON()
	if err != nil {
		data, _ = json.Marshal(protocol.Failure(res.CommandID, protocol.Errorf(protocol.CodeInternal, "encode result: %v", err), nil))
		return data
	}
	if len(data) <= limit {
		return data
	}
	if er, ok := res.Result.(protocol.ExecResult); ok {
		trial := *res
		trial.Result = protocol.ExecResult{ExitCode: er.ExitCode, Truncated: true}
		if empty, err := json.Marshal(&trial); err == nil && len(empty) <= limit {
			trial.Result = er.Fit(limit - len(empty))
			if d, err := json.Marshal(&trial); err == nil && len(d) <= limit {
				return d
			}
		}
	}
	if logs, ok := res.Result.(protocol.LogsResult); ok && len(logs.Logs) > 0 {
		// Binary search the most recent lines that fit.
		lo, hi := 0, len(logs.Logs) // lines kept: lo fits, hi+1 does not
		var best []byte
		for lo < hi {
			mid := (lo + hi + 1) / 2
			trial := *res
			trial.Result = protocol.LogsResult{Logs: logs.Logs[len(logs.Logs)-mid:], Dropped: logs.Dropped}
			trial.Warnings = append(append([]string(nil), res.Warnings...),
				fmt.Sprintf("logs truncated: the %d earliest lines did not fit in one message of %d bytes", len(logs.Logs)-mid, limit))
			if d, err := json.Marshal(&trial); err == nil && len(d) <= limit {
				lo, best = mid, d
			} else {
				hi = mid - 1
			}
		}
		if best != nil {
			return best
		}
	}
	a.log.Error("result too large for one message", "commandId", res.CommandID, "bytes", len(data), "limit", limit)
	data, _ = json.Marshal(protocol.Failure(res.CommandID,
		protocol.Errorf(protocol.CodeInternal, "result of %d bytes exceeds the message size limit of %d bytes", len(data), limit), res.Warnings))
	return data
}

// progress returns the ProgressFunc of a command: command_progress
// messages to the connected server, at most a few per second per stage,
// dropped while disconnected.
func (a *Agent) progress(cmd *protocol.Command) ProgressFunc {
	var (
		mu        sync.Mutex
		lastStage string
		lastSent  time.Time
	)
	return func(stage, detail string) {
		mu.Lock()
		if stage == lastStage && time.Since(lastSent) < 200*time.Millisecond {
			mu.Unlock()
			return
		}
		lastStage, lastSent = stage, time.Now()
		mu.Unlock()
		s := a.current()
		if s == nil {
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, a.tm.writeTimeout)
		defer cancel()
		if !s.waitOpen(ctx) {
			return
		}
		if err := s.send(ctx, protocol.CommandProgress{CommandID: cmd.ID, Stage: stage, Detail: detail}); err != nil {
			a.log.Debug("progress not sent", "commandId", cmd.ID, "err", err)
		}
	}
}
