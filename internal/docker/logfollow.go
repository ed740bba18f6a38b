package docker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Follow-stream timings.
const (
	// restartGrace: a container that stopped less than this long ago may be
	// restarting (docker restart, the restart action: a stop, then a start),
	// so the stream waits that long for it to run again before it ends.
	restartGrace = 2 * time.Second
	restartPoll  = 100 * time.Millisecond
	// A resumed stream that the engine ends again without a line waits
	// before the next attempt, doubling up to the maximum.
	resumeMinBackoff = 50 * time.Millisecond
	resumeMaxBackoff = 2 * time.Second
)

// FollowLogs streams the container's log lines to emit, starting with the
// last cmd.LogLines() lines (and cmd.Since), until the container stops or
// ctx ends (nil then: the caller ended it). Only those end it: when the
// engine ends its stream while the container still runs (Docker's json-file
// follower does when it falls behind a log rotation), or the container
// stopped and starts again within restartGrace (a restart), the stream is
// opened again after the last line delivered, repeating none. When the
// container stops, the lines the engine still holds after the last one
// delivered are read before the end.
//
// emit runs on the reading goroutine: it must not block for long, or the
// engine's log files rotate past the reader (the agent buffers, so it does
// not). Its error ends the stream and is returned.
func (e *Engine) FollowLogs(ctx context.Context, cmd *protocol.Command, emit func(stream, line string) error) error {
	c, err := e.lookup(ctx, "logs", cmd.ContainerID)
	if err != nil {
		return err
	}
	since, err := parseSince(cmd.Since)
	if err != nil {
		return err
	}
	f := &follower{
		e: e, id: c.ID, name: cmd.ContainerID, tty: isTTY(c), stamps: cmd.Timestamps, emit: emit,
		since: since, opened: time.Now(),
	}
	running := c.State != nil && c.State.Running
	return f.run(ctx, strconv.Itoa(cmd.LogLines()), running)
}

// follower is one FollowLogs call: where the stream stands and how to open
// it again after the last line delivered.
type follower struct {
	e      *Engine
	id     string // the Docker id: a container recreated under the name is another one
	name   string // the containerId, for errors
	tty    bool
	stamps bool // the server asked for timestamps: lines keep Docker's
	emit   func(stream, line string) error

	since  string    // the command's since, Docker's form
	opened time.Time // when the first stream was opened

	// last is the newest Docker timestamp delivered and atLast the number of
	// lines delivered with exactly that timestamp (several lines can share
	// one); a resumed stream skips those.
	last   []byte
	atLast int
	// from and skip hold last and atLast while a resumed stream skips the
	// lines delivered before.
	from    []byte
	skip    int
	resumed bool

	lines   int // lines delivered by the current stream
	resumes int
	emitErr error
	scratch []byte
}

// run opens streams until the container has stopped for good or ctx ends.
// running tells whether the container ran when the stream was opened: only
// then can lines follow the ones the engine sent.
func (f *follower) run(ctx context.Context, tail string, running bool) error {
	backoff := resumeMinBackoff
	for {
		opened, err := f.stream(ctx, tail)
		switch {
		case f.emitErr != nil:
			return f.emitErr
		case ctx.Err() != nil:
			return nil
		case err != nil && (!opened || f.lines == 0):
			// The engine refused the stream, or sent an error instead of
			// lines: trying again would fail the same way.
			return dockerError(err, "follow logs of container %s", f.name)
		}
		st, ierr := f.state(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(ierr, errNoSuchContainer):
			return nil // removed: nothing follows
		case ierr != nil:
			if err != nil {
				return dockerError(err, "follow logs of container %s", f.name)
			}
			return dockerError(ierr, "follow logs of container %s", f.name)
		}
		if err != nil {
			// A stream that broke after some lines (not one the engine
			// ended) of a container that is still there: resume it like one
			// the engine ended.
			f.e.log.Warn("log stream broke; resuming", "container", f.name, "err", err)
		}
		tail = "all"
		switch {
		case st.Running:
			if f.lines == 0 && running {
				// The engine ended a stream of a running container at once
				// again: do not spin.
				if !sleep(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, resumeMaxBackoff)
			} else {
				backoff = resumeMinBackoff
			}
			running = true
		case running:
			// It stopped while streaming: read what the engine holds after
			// the last line delivered (a stream of a stopped container ends
			// at the end of its log).
			running = false
		default:
			// Everything is read. A container that stopped just now may be
			// restarting.
			if !f.waitRestart(ctx, st) {
				return nil
			}
			running = true
		}
		f.resume()
	}
}

// stream opens one engine stream and delivers its lines until it ends. A
// nil error means the engine ended the stream (or ctx ended); opened
// tells whether the engine accepted the request.
func (f *follower) stream(ctx context.Context, tail string) (opened bool, err error) {
	since := f.since
	if f.resumed {
		since = f.resumeSince()
	}
	// The stream has no deadline, but opening it has: a daemon that does not
	// answer within the call timeout cancels the request.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(f.e.callTimeout, cancel)
	rc, err := f.e.cli.ContainerLogs(sctx, f.id, container.LogsOptions{
		ShowStdout: true, ShowStderr: true, Follow: true, Timestamps: true, Tail: tail, Since: since,
	})
	if !timer.Stop() {
		if err == nil {
			rc.Close()
		}
		err = context.DeadlineExceeded
	}
	f.lines = 0
	if err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	defer rc.Close()
	err = readLogs(rc, f.tty, true, f.line)
	if f.emitErr != nil || ctx.Err() != nil || errors.Is(err, io.EOF) {
		return true, nil
	}
	return true, err
}

// line delivers one line of the engine's stream, unless a resumed stream
// delivered it before.
func (f *follower) line(stream string, stamp, text []byte) error {
	if len(stamp) != stampLen {
		// Not Docker's timestamp (never seen): deliver it untracked.
		return f.deliver(stream, stamp, text)
	}
	if f.skip >= 0 && f.from != nil {
		switch c := bytes.Compare(stamp, f.from); {
		case c < 0:
			return nil // delivered before the stream was resumed
		case c == 0 && f.skip > 0:
			f.skip--
			return nil
		case c > 0:
			f.skip = -1 // past the lines delivered before
		}
	}
	switch c := bytes.Compare(stamp, f.last); {
	case c > 0 || f.last == nil:
		f.last = append(f.last[:0], stamp...)
		f.atLast = 1
	case c == 0:
		f.atLast++
	}
	return f.deliver(stream, stamp, text)
}

func (f *follower) deliver(stream string, stamp, text []byte) error {
	if !f.stamps {
		stamp = nil
	}
	f.scratch = appendLine(f.scratch[:0], stamp, text)
	f.lines++
	if err := f.emit(stream, string(f.scratch)); err != nil {
		f.emitErr = err
		return err
	}
	return nil
}

// resume sets up the next stream to skip what was delivered.
func (f *follower) resume() {
	f.resumed = true
	f.resumes++
	if f.last != nil {
		f.from = append(f.from[:0], f.last...)
		f.skip = f.atLast
	}
	f.e.log.Debug("log stream resumed", "container", f.name, "after", string(f.last), "resumes", f.resumes)
}

// resumeSince is the since filter of a resumed stream: the newest timestamp
// delivered (the engine's filter keeps lines at that very time, which line
// skips), or with none delivered yet the later of the command's since and
// the first stream's opening.
func (f *follower) resumeSince() string {
	if f.last != nil {
		if t, err := time.Parse(stampLayout, string(f.last)); err == nil {
			return unixNano(t)
		}
	}
	opened := unixNano(f.opened)
	if f.since == "" {
		return opened
	}
	a, errA := strconv.ParseFloat(f.since, 64)
	b, errB := strconv.ParseFloat(opened, 64)
	if errA == nil && errB == nil && a > b {
		return f.since
	}
	return opened
}

// state inspects the followed container by its Docker id.
func (f *follower) state(ctx context.Context) (*container.State, error) {
	ictx, cancel := f.e.call(ctx, 0)
	defer cancel()
	c, err := f.e.cli.ContainerInspect(ictx, f.id)
	if err != nil {
		if isNotFound(err) {
			return nil, errNoSuchContainer
		}
		return nil, err
	}
	if c.State == nil {
		return &container.State{}, nil
	}
	return c.State, nil
}

// waitRestart waits for a stopped container to run again: as long as the
// engine restarts it (restart policy), or until restartGrace after it
// stopped. It reports whether it runs.
func (f *follower) waitRestart(ctx context.Context, st *container.State) bool {
	stopped := time.Now()
	if t, err := time.Parse(time.RFC3339Nano, st.FinishedAt); err == nil && t.Before(stopped) && t.Year() > 1 {
		stopped = t
	}
	for {
		switch {
		case st.Running:
			return true
		case !st.Restarting && time.Since(stopped) >= restartGrace:
			return false
		}
		if !sleep(ctx, restartPoll) {
			return false
		}
		var err error
		if st, err = f.state(ctx); err != nil {
			return false
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
