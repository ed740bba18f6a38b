package agent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Causes that end a log stream.
var (
	errStreamCancelled = errors.New("cancelled by the server")
	errConnLost        = errors.New("connection to the server was lost")
	errStreamEnded     = errors.New("log stream ended")
)

// Log message bounds: how lines are batched into log messages.
const (
	maxBatchLines = 500      // lines per log message
	maxBatchBytes = 64 << 10 // bytes of lines per log message
	maxLineBytes  = 64 << 10 // longer lines are clipped
)

// streams tracks the running follow-log streams so cancel and shutdown can
// end them.
type streams struct {
	mu     sync.Mutex
	m      map[string]context.CancelCauseFunc
	closed bool
}

func newStreams() *streams { return &streams{m: map[string]context.CancelCauseFunc{}} }

func (s *streams) add(id string, cancel context.CancelCauseFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return protocol.Errorf(protocol.CodeUnavailable, "%s; log stream not started", errShuttingDown)
	case len(s.m) >= maxStreams:
		return protocol.Errorf(protocol.CodeUnavailable, "too many log streams (%d); cancel one first", maxStreams)
	}
	s.m[id] = cancel
	return nil
}

func (s *streams) remove(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// cancel ends stream id; it reports whether there was one.
func (s *streams) cancel(id string, cause error) bool {
	s.mu.Lock()
	c, ok := s.m[id]
	s.mu.Unlock()
	if ok {
		c(cause)
	}
	return ok
}

// cancelAll ends every stream and refuses new ones.
func (s *streams) cancelAll(cause error) {
	s.mu.Lock()
	s.closed = true
	cancels := make([]context.CancelCauseFunc, 0, len(s.m))
	for _, c := range s.m {
		cancels = append(cancels, c)
	}
	s.mu.Unlock()
	for _, c := range cancels {
		c(cause)
	}
}

// startFollow starts a logs follow:true stream on the current connection
// and returns at once, so the stream does not hold its container's queue
// (a stop queued behind it would otherwise wait forever). The stream ends
// when the container stops, the server cancels it, the connection is lost
// or the agent shuts down; then its command_result is delivered.
func (a *Agent) startFollow(ctx context.Context, cmd *protocol.Command) {
	s := a.current()
	if s == nil {
		a.finish(cmd, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "not connected to the server; log stream not started"), nil), 0)
		return
	}
	sctx, cancel := context.WithCancelCause(ctx)
	if err := a.streams.add(cmd.ID, cancel); err != nil {
		cancel(nil)
		a.finish(cmd, protocol.Failure(cmd.ID, err, nil), 0)
		return
	}
	a.disp.spawn(func() {
		defer a.streams.remove(cmd.ID)
		defer cancel(nil)
		start := time.Now()
		res := a.follow(sctx, cancel, s, cmd)
		a.finish(cmd, res, time.Since(start))
	})
}

// follow reads the engine's lines at the container's pace into a bounded
// buffer and sends them from there: the engine reader never waits for the
// server, so the engine's log rotation cannot overtake it. When the server
// reads slower than the container writes, the buffer drops its oldest lines
// and the stream marks each run of them with a gap message; the result
// counts every line read and not sent as dropped.
func (a *Agent) follow(ctx context.Context, cancel context.CancelCauseFunc, s *session, cmd *protocol.Command) (res *protocol.CommandResult) {
	stop := context.AfterFunc(s.ctx, func() { cancel(errConnLost) })
	defer stop()

	buf := newLogBuffer(a.opts.LogStreamBuffer, a.logBudget)
	out := &logSender{a: a, s: s, cmd: cmd, cancel: cancel}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if s.waitOpen(ctx) {
			out.run(ctx, buf)
		}
		buf.discard() // what the sender could not send any more
	}()
	emit := func(stream, line string) error {
		if ctx.Err() == nil && buf.push(stream, line, time.Now()) {
			return nil
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		return errStreamEnded
	}
	err := a.followLogs(ctx, cmd, emit)
	buf.close()
	<-sent

	pushed, dropped := buf.counts()
	logs := protocol.LogsResult{Logs: []string{}, Dropped: dropped + out.dropped, Sent: out.sent}
	if logs.Dropped > 0 {
		a.log.Info("log stream dropped lines", "commandId", cmd.ID, "read", pushed, "sent", out.sent,
			"dropped", logs.Dropped, "gaps", out.gaps)
	}
	cause := context.Cause(ctx)
	switch {
	case out.err != nil || errors.Is(cause, errConnLost):
		f := protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "log stream interrupted: %v", errConnLost), nil)
		f.Result = logs
		return f
	case cause != nil: // cancelled by the server or shutdown: a normal end
		return protocol.Success(cmd.ID, logs, nil)
	case err != nil:
		a.runtimeFailed(cmd.Action, err)
		f := protocol.Failure(cmd.ID, err, nil)
		f.Result = logs
		return f
	}
	return protocol.Success(cmd.ID, logs, nil)
}

// followLogs calls Runtime.FollowLogs, turning a panic into an error.
func (a *Agent) followLogs(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("log stream panicked", "commandId", cmd.ID, "panic", p)
			err = protocol.Errorf(protocol.CodeInternal, "internal error while streaming logs: %v", p)
		}
	}()
	p, err := cmd.LogsParams()
	if err != nil {
		return err
	}
	return a.opts.Runtime.FollowLogs(ctx, p, emit)
}

// logSender takes lines from the buffer, batches them into log messages and
// writes them. Only its own goroutine touches it until run returns.
type logSender struct {
	a        *Agent
	s        *session
	cmd      *protocol.Command
	cancel   context.CancelCauseFunc
	err      error // the write that failed
	sent     int   // lines written
	gaps     int   // lines reported missing in gap messages
	dropped  int   // lines taken from the buffer and not written
	oversize bool  // the message envelope alone exceeded the limit (logged)
}

// run sends until the buffer is closed and empty, the stream's context ends
// or a write fails.
func (o *logSender) run(ctx context.Context, buf *logBuffer) {
	for o.err == nil {
		t, ok := buf.next(ctx, maxBatchLines, maxBatchBytes)
		if !ok {
			return
		}
		if t.gap > 0 {
			o.sendGap(ctx, t)
			continue
		}
		for i, l := range t.lines {
			t.lines[i] = clipLine(l)
		}
		o.send(ctx, t.stream, t.at, t.lines)
	}
}

// sendGap writes a log message that marks t.gap lines missing.
func (o *logSender) sendGap(ctx context.Context, t logTake) {
	msg := protocol.LogMessage{CommandID: o.cmd.ID, ContainerID: o.cmd.ContainerID, Stream: t.stream,
		Gap: t.gap, Timestamp: protocol.Timestamp(t.at)}
	data, err := json.Marshal(msg)
	if err == nil && len(data) <= o.a.opts.MaxMessageBytes && o.write(ctx, data, 0) {
		o.gaps += t.gap
	}
}

// send writes lines as one log message, split until each frame fits.
func (o *logSender) send(ctx context.Context, stream string, at time.Time, lines []string) {
	if o.err != nil || ctx.Err() != nil {
		o.dropped += len(lines)
		return
	}
	msg := protocol.LogMessage{CommandID: o.cmd.ID, ContainerID: o.cmd.ContainerID, Stream: stream, Timestamp: protocol.Timestamp(at)}
	if len(lines) == 1 && lines[0] != "" {
		msg.Line = lines[0]
	} else {
		msg.Lines = lines
	}
	data, err := msg.MarshalJSON() // not json.Marshal: that would check and compact the output again
	if err != nil {
		o.a.log.Error("encode log message", "commandId", o.cmd.ID, "err", err)
		o.dropped += len(lines)
		return
	}
	if limit := o.a.opts.MaxMessageBytes; len(data) > limit {
		if len(lines) > 1 {
			mid := len(lines) / 2
			o.send(ctx, stream, at, lines[:mid])
			o.send(ctx, stream, at, lines[mid:])
			return
		}
		// One line that JSON escaping blew up: keep clipping it, unless
		// clipping cannot shorten it any more (the message without its line
		// is over the limit: a very long, escaped command id).
		shorter := clip(lines[0], len(lines[0])/2)
		if len(shorter) >= len(lines[0]) {
			o.dropped++
			if !o.oversize { // once per stream: every line would repeat it
				o.oversize = true
				o.a.log.Error("log message over the size limit even without its line; lines dropped",
					"commandId", o.cmd.ID, "limitBytes", limit)
			}
			return
		}
		o.send(ctx, stream, at, []string{shorter})
		return
	}
	if o.write(ctx, data, len(lines)) {
		o.sent += len(lines)
		o.a.obs.LogLinesStreamed(len(lines))
	}
}

// write sends one frame carrying n lines; on failure the lines count as
// dropped, and a failed write (not a cancelled stream) ends the stream as
// a lost connection.
func (o *logSender) write(ctx context.Context, data []byte, n int) bool {
	err := o.s.conn.Send(ctx, data)
	if err == nil {
		return true
	}
	o.dropped += n
	if ctx.Err() != nil {
		return false // cancelled while waiting for room in the send queue
	}
	o.err = err
	o.cancel(errConnLost)
	o.a.log.Warn("log stream interrupted", "commandId", o.cmd.ID, "err", err)
	return false
}

const clipMarker = " …[line truncated]"

func clipLine(line string) string {
	if len(line) <= maxLineBytes {
		return line
	}
	return clip(line, maxLineBytes)
}

// clip cuts line to about n bytes at a rune boundary and marks the cut.
func clip(line string, n int) string {
	if n <= 0 {
		return clipMarker
	}
	for n > 0 && n < len(line) && !utf8.RuneStart(line[n]) {
		n--
	}
	return strings.ToValidUTF8(line[:n], "") + clipMarker
}
