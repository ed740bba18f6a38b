package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Console sessions (docs/protocol.md): exec, attach and stats with follow. A session
// is registered the moment its command arrives, so input that follows at
// once is kept (in order, bounded by bytes) until the process is attached.
// It waits for its turn in its container's queue like any command, then
// runs detached from that queue: a long session never holds back a stop of
// the same container. Its output is sent under the connection's
// backpressure; nothing of its input or output is ever logged.

// DefaultMaxSessions is the default of Options.MaxSessions (MAX_SESSIONS).
const DefaultMaxSessions = 64

// Session bounds.
const (
	// consoleInputBytes bounds the input a session holds that its process
	// has not read yet; more is dropped, counted and reported.
	consoleInputBytes = 256 << 10
	// consoleInputMessages bounds the queued input and resize messages.
	consoleInputMessages = 4096
)

// OutputFunc receives an interactive session's output, blocking while the
// server reads slowly. It is an alias so internal/docker can implement
// Runtime without importing this package.
type OutputFunc = func(stream string, data []byte) error

// consoles registers the sessions between the arrival of their command and
// its result.
type consoles struct {
	mu sync.Mutex
	m  map[string]*console
}

func newConsoles() *consoles { return &consoles{m: map[string]*console{}} }

// console is one session: its queue of input not yet handed to the runtime.
type console struct {
	id    string
	input bool // interactive: takes stdin and resize

	mu      sync.Mutex
	queue   []protocol.Message
	bytes   int
	dropped int64 // input bytes over the bound
	closed  bool
	notify  chan struct{} // one token: something was queued
}

// open registers a session for cmd, refusing it beyond max.
func (cs *consoles) open(cmd *protocol.Command, max int) (*console, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.m) >= max {
		return nil, protocol.Errorf(protocol.CodeUnavailable,
			"too many console sessions on this node (MAX_SESSIONS=%d); end one first", max)
	}
	c := &console{id: cmd.ID, input: cmd.Interactive(), notify: make(chan struct{}, 1)}
	cs.m[cmd.ID] = c
	return c, nil
}

// close unregisters a session: later input is dropped with a debug line.
// It returns the input still queued, which nothing will read now.
func (cs *consoles) close(c *console) (messages, bytes int) {
	cs.mu.Lock()
	if cs.m[c.id] == c {
		delete(cs.m, c.id)
	}
	cs.mu.Unlock()
	c.mu.Lock()
	messages, bytes = len(c.queue), c.bytes
	c.closed, c.queue, c.bytes = true, nil, 0
	c.mu.Unlock()
	return messages, bytes
}

func (cs *consoles) get(id string) *console {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.m[id]
}

// push queues input; it never blocks (it runs on the connection's read
// goroutine). It reports why input was not queued, or "".
func (c *console) push(m protocol.Message, size int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return "session finished"
	case !c.input:
		return "session takes no input"
	case c.bytes+size > consoleInputBytes || len(c.queue) >= consoleInputMessages:
		c.dropped += int64(size)
		return "session input buffer full"
	}
	c.queue = append(c.queue, m)
	c.bytes += size
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return ""
}

// feed hands queued input to in, in order, until ctx ends.
func (c *console) feed(ctx context.Context, in chan<- protocol.Message) {
	for {
		c.mu.Lock()
		var m protocol.Message
		if len(c.queue) > 0 {
			m = c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			if s, ok := m.(protocol.Stdin); ok {
				c.bytes -= len(s.Data)
			}
		}
		c.mu.Unlock()
		if m == nil {
			select {
			case <-c.notify:
				continue
			case <-ctx.Done():
				return
			}
		}
		select {
		case in <- m:
		case <-ctx.Done():
			c.unread(m) // not delivered: close counts it
			return
		}
	}
}

// unread puts m back at the head of the queue.
func (c *console) unread(m protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.queue = append([]protocol.Message{m}, c.queue...)
	if s, ok := m.(protocol.Stdin); ok {
		c.bytes += len(s.Data)
	}
}

func (c *console) droppedBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// submitSession registers a session command on arrival and queues it
// behind the earlier commands of its container.
func (a *Agent) submitSession(cmd *protocol.Command, rsv *reservation) {
	log := a.log.With("commandId", cmd.ID, "action", cmd.Action, "containerId", cmd.ContainerID)
	c, err := a.consoles.open(cmd, a.opts.MaxSessions)
	if err != nil {
		rsv.release()
		log.Warn("session refused", "err", err)
		a.finish(cmd, protocol.Failure(cmd.ID, err, nil), 0)
		return
	}
	a.disp.submit(&job{
		id:  cmd.ID,
		key: cmd.ContainerID,
		rsv: rsv, // released when the session starts: a running session is bounded by MAX_SESSIONS
		run: func(ctx context.Context) { a.startSession(ctx, cmd, c) },
		abort: func(reason error) {
			rsv.release()
			a.consoles.close(c)
			log.Info("session not started", "reason", reason)
			a.finish(cmd, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "%s", reason), nil), 0)
		},
	})
}

// startSession runs when the session's turn in its container's queue has
// come: it starts the session as a detached task and returns, freeing the
// queue.
func (a *Agent) startSession(ctx context.Context, cmd *protocol.Command, c *console) {
	streaming := cmd.Action != protocol.ActionExec || cmd.Stdin
	var s *session
	sctx, cancel := context.WithCancelCause(ctx)
	if streaming {
		if s = a.current(); s == nil {
			cancel(nil)
			a.consoles.close(c)
			a.finish(cmd, protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "not connected to the server; session not started"), nil), 0)
			return
		}
		// Registered as a stream: cancel and shutdown end it.
		if err := a.streams.add(cmd.ID, cancel); err != nil {
			cancel(nil)
			a.consoles.close(c)
			a.finish(cmd, protocol.Failure(cmd.ID, err, nil), 0)
			return
		}
	}
	a.disp.spawn(func() {
		defer a.consoles.close(c)
		defer cancel(nil)
		if streaming {
			defer a.streams.remove(cmd.ID)
			stop := context.AfterFunc(s.ctx, func() { cancel(errConnLost) })
			defer stop()
		}
		start := time.Now()
		log := a.log.With("commandId", cmd.ID, "action", cmd.Action, "containerId", cmd.ContainerID)
		log.Info("session started", "interactive", cmd.Interactive(), "tty", cmd.TTY)
		res := a.runConsole(sctx, cancel, s, cmd, c)
		// Unregistered before the result goes out: input the server sends
		// after the result is dropped with a debug line, never queued for
		// a session that has ended.
		if n, size := a.consoles.close(c); n > 0 {
			log.Debug("console input dropped", "messages", n, "bytes", size, "reason", "the session ended before the process read it")
		}
		a.finish(cmd, res, time.Since(start))
	})
}

// runConsole runs one session and builds its final result.
func (a *Agent) runConsole(ctx context.Context, cancel context.CancelCauseFunc, s *session, cmd *protocol.Command, c *console) (res *protocol.CommandResult) {
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("session panicked", "commandId", cmd.ID, "action", cmd.Action, "panic", p)
			res = protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeInternal, "internal error in %s session: %v", cmd.Action, p), nil)
		}
	}()
	rt := a.opts.Runtime
	if cmd.Action == protocol.ActionExec && !cmd.Stdin {
		r, err := rt.Exec(ctx, cmd.ExecParams())
		if err != nil {
			a.runtimeFailed(cmd.Action, err)
			return protocol.Failure(cmd.ID, err, nil)
		}
		return protocol.Success(cmd.ID, r, nil)
	}
	out := &streamSender{a: a, s: s, cmd: cmd, ctx: ctx, cancel: cancel}
	if !s.waitOpen(ctx) {
		return a.sessionEnded(ctx, cmd, protocol.SessionResult{Detached: true}, nil)
	}
	if cmd.Action == protocol.ActionStats {
		n, err := rt.FollowStats(ctx, cmd.StatsParams(), out.stats)
		if err != nil && ctx.Err() == nil {
			a.runtimeFailed(cmd.Action, err)
			return protocol.Failure(cmd.ID, err, nil)
		}
		if cause := context.Cause(ctx); errors.Is(cause, errConnLost) || errors.Is(cause, errShuttingDown) {
			f := protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "stats stream ended: %v", cause), nil)
			f.Result = protocol.StatsFollowResult{Samples: n}
			return f
		}
		return protocol.Success(cmd.ID, protocol.StatsFollowResult{Samples: n}, nil)
	}

	in := make(chan protocol.Message)
	fctx, stopFeed := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.feed(fctx, in)
	}()
	var (
		r        protocol.SessionResult
		warnings []string
		err      error
	)
	if cmd.Action == protocol.ActionAttach {
		r, warnings, err = rt.Attach(ctx, cmd.AttachParams(), in, out.output)
	} else {
		r, err = rt.ExecSession(ctx, cmd.ExecParams(), in, out.output)
	}
	stopFeed()
	wg.Wait()
	if d := c.droppedBytes(); d > 0 {
		r.InputDroppedBytes += d
		warnings = append(warnings, fmt.Sprintf("%d bytes of input dropped: more than %d bytes were waiting for the process to read them", d, consoleInputBytes))
	}
	if err != nil && ctx.Err() == nil {
		a.runtimeFailed(cmd.Action, err)
		return protocol.Failure(cmd.ID, err, warnings)
	}
	return a.sessionEnded(ctx, cmd, r, warnings)
}

// sessionEnded builds the final result of an interactive session from why
// it ended: the process ended ({exitCode}), the server cancelled it
// ({detached: true}), or the connection or the agent ended (an unavailable
// error whose result says it detached).
func (a *Agent) sessionEnded(ctx context.Context, cmd *protocol.Command, r protocol.SessionResult, warnings []string) *protocol.CommandResult {
	cause := context.Cause(ctx)
	if r.ExitCode != nil || cause == nil {
		return protocol.Success(cmd.ID, r, warnings)
	}
	r.ExitCode, r.Detached = nil, true
	switch {
	case errors.Is(cause, errConnLost), errors.Is(cause, errShuttingDown):
		f := protocol.Failure(cmd.ID, protocol.Errorf(protocol.CodeUnavailable, "session ended: %v", cause), warnings)
		f.Result = r
		return f
	}
	return protocol.Success(cmd.ID, r, warnings)
}

// consoleInput queues stdin or resize for its session, or drops it with a
// debug line that never shows its content.
func (a *Agent) consoleInput(id string, m protocol.Message, size int) {
	c := a.consoles.get(id)
	why := "no session with that id"
	if c != nil {
		if why = c.push(m, size); why == "" {
			return
		}
	}
	a.log.Debug("console input dropped", "commandId", id, "type", m.MessageType(), "bytes", size, "reason", why)
}

// streamSender sends a session's output and samples on its connection,
// blocking while the connection's send queue is full.
type streamSender struct {
	a      *Agent
	s      *session
	cmd    *protocol.Command
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (o *streamSender) output(stream string, data []byte) error {
	msg := protocol.Stream{CommandID: o.cmd.ID, Stream: stream, Data: data}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if len(b) > o.a.opts.MaxMessageBytes && len(data) > 1 {
		// Split until each frame fits (a small MAX_MESSAGE_BYTES).
		mid := len(data) / 2
		if err := o.output(stream, data[:mid]); err != nil {
			return err
		}
		return o.output(stream, data[mid:])
	}
	return o.send(b)
}

func (o *streamSender) stats(sample protocol.StatsSample) error {
	sample.CommandID = o.cmd.ID
	b, err := json.Marshal(sample)
	if err != nil {
		return err
	}
	return o.send(b)
}

func (o *streamSender) send(b []byte) error {
	if err := o.s.conn.Send(o.ctx, b); err != nil {
		if o.ctx.Err() != nil {
			return context.Cause(o.ctx)
		}
		o.cancel(errConnLost)
		return fmt.Errorf("%w: %v", errConnLost, err)
	}
	return nil
}
