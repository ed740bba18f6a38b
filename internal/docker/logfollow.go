package docker

import (
	"context"
	"errors"
	"hash/maphash"
	"io"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/backoff"
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
// last p.Lines lines (and p.Since), until the container stops or
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
func (e *Engine) FollowLogs(ctx context.Context, p protocol.LogsParams, emit func(stream, line string) error) error {
	if p.Lines < 0 { // Docker would read a negative tail as the whole log
		return protocol.Errorf(protocol.CodeInvalid, "lines must not be negative, got %d", p.Lines)
	}
	c, err := e.lookup(ctx, "logs", p.ContainerID)
	if err != nil {
		return err
	}
	f := &follower{
		e: e, id: c.ID, name: p.ContainerID, tty: isTTY(c), stamps: p.Timestamps, emit: emit,
		since: dockerSince(p.Since), opened: time.Now(),
	}
	running := c.State != nil && c.State.Running
	return f.run(ctx, strconv.Itoa(p.Lines), running)
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

	// last is the newest Docker timestamp delivered (Unix nanoseconds, 0
	// before the first) and atLast the number of lines delivered with
	// exactly that timestamp (several lines can share one).
	last   int64
	atLast int
	recent recentLines
	// While replaying, the engine sends lines delivered before (a resumed
	// stream, or Docker's follower reading a file again): lines older than
	// from, and the first skip lines at from, are left out.
	replay  bool
	from    int64
	skip    int
	resumed bool

	lines    int // lines delivered by the current stream
	resumes  int
	rewinds  int // times the engine went back within a stream
	repeated int // lines the engine sent again, left out
	emitErr  error
	scratch  []byte
}

// run opens streams until the container has stopped for good or ctx ends.
// running tells whether the container ran when the stream was opened: only
// then can lines follow the ones the engine sent.
func (f *follower) run(ctx context.Context, tail string, running bool) error {
	resume := backoff.New(resumeMinBackoff, resumeMaxBackoff, backoff.WithoutJitter())
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
				if resume.Wait(ctx) != nil {
					return nil
				}
			} else {
				resume.Reset()
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

// line delivers one line of the engine's stream unless it was delivered
// before: the start of a resumed stream repeats the lines at the timestamp
// it resumes from, and Docker 20.10's json-file follower sometimes reads a
// log file again from its start after a rotation (it takes the new, smaller
// file for a truncated one). A line older than the newest one delivered is
// such a repeat when it is among the recent lines delivered (same time and
// text) or older than all of them; the engine then replays, and everything
// up to the newest line delivered is left out. Other lines older than the
// newest (stdout and stderr stamped a moment apart and written the other
// way round) are delivered.
func (f *follower) line(stream string, stamp, text []byte) error {
	ts, ok := parseStamp(stamp)
	if !ok {
		// Not Docker's timestamp (never seen): deliver it untracked.
		return f.deliver(stream, stamp, text)
	}
	h := lineHash(stream, text)
	if f.replay {
		if ts < f.from || ts == f.from && f.skip > 0 {
			if ts == f.from {
				f.skip--
			}
			f.repeated++
			return nil
		}
		f.replay = false
	} else if ts < f.last && f.recent.seen(ts, h) {
		f.rewinds++
		f.repeated++
		f.replay, f.from, f.skip = true, f.last, f.atLast
		f.e.log.Debug("log stream went back; leaving out lines delivered before", "container", f.name, "rewinds", f.rewinds)
		return nil
	}
	switch {
	case ts > f.last:
		f.last, f.atLast = ts, 1
	case ts == f.last:
		f.atLast++
	}
	f.recent.add(ts, h)
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

// resume sets up the next stream to leave out what was delivered.
func (f *follower) resume() {
	f.resumed = true
	f.resumes++
	if f.last != 0 {
		f.replay, f.from, f.skip = true, f.last, f.atLast
	}
	f.e.log.Debug("log stream resumed", "container", f.name, "after", time.Unix(0, f.last).UTC().Format(stampLayout),
		"resumes", f.resumes, "repeatedLinesLeftOut", f.repeated)
}

// resumeSince is the since filter of a resumed stream: the newest timestamp
// delivered (the engine's filter keeps lines at that very time, which line
// skips), or with none delivered yet the later of the command's since and
// the first stream's opening.
func (f *follower) resumeSince() string {
	if f.last != 0 {
		return unixNano(time.Unix(0, f.last))
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
	poll := backoff.Constant(restartPoll)
	for {
		switch {
		case st.Running:
			return true
		case !st.Restarting && time.Since(stopped) >= restartGrace:
			return false
		}
		if poll.Wait(ctx) != nil {
			return false
		}
		var err error
		if st, err = f.state(ctx); err != nil {
			return false
		}
	}
}

// recentLines remembers the time and a hash of the last lines delivered, in
// delivery order, to recognise lines the engine sends again. It grows up to
// maxRecentLines entries (16 bytes each).
type recentLines struct {
	ts   []int64
	hash []uint64
	next int // where the next entry goes once full
}

const (
	minRecentLines = 256
	maxRecentLines = 8192
)

func (r *recentLines) add(ts int64, h uint64) {
	if len(r.ts) < maxRecentLines {
		if len(r.ts) == cap(r.ts) {
			n := max(minRecentLines, 2*cap(r.ts))
			r.ts = append(make([]int64, 0, n), r.ts...)
			r.hash = append(make([]uint64, 0, n), r.hash...)
		}
		r.ts = append(r.ts, ts)
		r.hash = append(r.hash, h)
		return
	}
	r.ts[r.next], r.hash[r.next] = ts, h
	r.next = (r.next + 1) % len(r.ts)
}

// seen reports whether a line (time ts, hash h) older than the newest one
// delivered was delivered before: it is among the recent lines, or older
// than all of them (a line stamped that long before the newest cannot be a
// fresh one).
func (r *recentLines) seen(ts int64, h uint64) bool {
	n := len(r.ts)
	if n == 0 {
		return false
	}
	if ts < r.ts[r.next%n] { // the oldest entry
		return true
	}
	for i := range n {
		j := (r.next - 1 - i + 2*n) % n // newest first
		if r.ts[j] == ts && r.hash[j] == h {
			return true
		}
	}
	return false
}

var hashSeed = maphash.MakeSeed()

func lineHash(stream string, text []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(hashSeed)
	h.WriteString(stream)
	h.Write(text)
	return h.Sum64()
}

// parseStamp reads Docker's timestamp, 2006-01-02T15:04:05.000000000Z, as
// Unix nanoseconds.
func parseStamp(b []byte) (int64, bool) {
	if !isStamp(b) {
		return 0, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range b[i : i+n] {
			v = 10*v + int(c-'0')
		}
		return v
	}
	t := time.Date(num(0, 4), time.Month(num(5, 2)), num(8, 2), num(11, 2), num(14, 2), num(17, 2), num(20, 9), time.UTC)
	return t.UnixNano(), true
}
