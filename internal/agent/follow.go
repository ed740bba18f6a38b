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
)

// Log stream bounds: lines waiting between the engine and the sender, and
// how lines are batched into log messages.
const (
	streamBuffer  = 128      // lines; the engine reader blocks beyond
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

type logLine struct {
	stream, line string
	at           time.Time
}

// follow pumps the engine's lines to the server through a bounded channel:
// when the server reads slowly, Send blocks, the channel fills and emit
// blocks the engine reader (backpressure), so memory stays bounded and no
// line is dropped while the connection lives.
func (a *Agent) follow(ctx context.Context, cancel context.CancelCauseFunc, s *session, cmd *protocol.Command) (res *protocol.CommandResult) {
	stop := context.AfterFunc(s.ctx, func() { cancel(errConnLost) })
	defer stop()

	lines := make(chan logLine, streamBuffer)
	out := &logSender{a: a, s: s, cmd: cmd, cancel: cancel}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if !s.waitOpen(ctx) {
			for range lines { // emit fails on ctx from now on
				out.dropped++
			}
			return
		}
		out.run(lines)
	}()
	emit := func(stream, line string) error {
		select {
		case lines <- logLine{stream: stream, line: line, at: time.Now()}:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	err := a.followLogs(ctx, cmd, emit)
	close(lines)
	<-sent

	logs := protocol.LogsResult{Logs: []string{}, Dropped: out.dropped}
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
	return a.opts.Runtime.FollowLogs(ctx, cmd, emit)
}

// logSender batches lines into log messages and writes them. Only its own
// goroutine touches it until run returns.
type logSender struct {
	a        *Agent
	s        *session
	cmd      *protocol.Command
	cancel   context.CancelCauseFunc
	err      error // the write that failed; later lines are dropped
	dropped  int
	oversize bool // the message envelope alone exceeded the limit (logged)
}

func (o *logSender) run(lines <-chan logLine) {
	var carry *logLine
	for {
		var first logLine
		if carry != nil {
			first, carry = *carry, nil
		} else {
			l, ok := <-lines
			if !ok {
				return
			}
			first = l
		}
		if o.err != nil {
			o.dropped++
			continue
		}
		batch := []string{clipLine(first.line)}
		size := len(batch[0])
	gather: // take what is already waiting, without waiting for more
		for len(batch) < maxBatchLines && size < maxBatchBytes {
			select {
			case l, ok := <-lines:
				if !ok {
					break gather
				}
				if l.stream != first.stream {
					carry = &l
					break gather
				}
				c := clipLine(l.line)
				batch = append(batch, c)
				size += len(c)
			default:
				break gather
			}
		}
		o.send(first.stream, first.at, batch)
	}
}

// send writes lines as one log message, split until each frame fits.
func (o *logSender) send(stream string, at time.Time, lines []string) {
	if o.err != nil {
		o.dropped += len(lines)
		return
	}
	msg := protocol.LogMessage{CommandID: o.cmd.ID, ContainerID: o.cmd.ContainerID, Stream: stream, Timestamp: protocol.Timestamp(at)}
	if len(lines) == 1 && lines[0] != "" {
		msg.Line = lines[0]
	} else {
		msg.Lines = lines
	}
	data, err := json.Marshal(msg)
	if err != nil {
		o.a.log.Error("encode log message", "commandId", o.cmd.ID, "err", err)
		o.dropped += len(lines)
		return
	}
	if limit := o.a.opts.MaxMessageBytes; len(data) > limit {
		if len(lines) > 1 {
			mid := len(lines) / 2
			o.send(stream, at, lines[:mid])
			o.send(stream, at, lines[mid:])
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
		o.send(stream, at, []string{shorter})
		return
	}
	if err := o.s.conn.Send(o.s.ctx, data); err != nil {
		o.err = err
		o.dropped += len(lines)
		o.cancel(errConnLost)
		o.a.log.Warn("log stream interrupted", "commandId", o.cmd.ID, "err", err)
		return
	}
	o.a.obs.LogLinesStreamed(len(lines))
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
