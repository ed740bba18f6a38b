package docker

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Attach bounds.
const (
	// replayIdle ends the history read of a replay when the log is quiet
	// this long, replayMax in any case.
	replayIdle = 200 * time.Millisecond
	replayMax  = time.Second
	// junctionWait is how long live output that the log has not shown
	// (yet) is held back while looking for where the replay meets it, and
	// junctionQuiet how long the join waits for any live output at all.
	junctionWait  = 300 * time.Millisecond
	junctionQuiet = 2 * time.Second
	// junctionMaxBytes bounds the live output held back meanwhile.
	junctionMaxBytes = 256 << 10
	// exitDrain is how long the output of a container that stopped may
	// take to arrive before its attach stream is closed.
	exitDrain = time.Second
)

// Attach attaches to the main process of a managed, running container:
// first the last p.Lines lines of its log (replayed as output), then its
// live output, to out; input from in reaches the process only when the
// container was created with eggConfig.openStdin (and ALLOW_CONSOLE_INPUT is
// on); anything else is dropped and counted. Detaching never closes the
// main process's stdin: an eof is ignored. It ends when the container stops
// ({exitCode}) or ctx ends ({detached: true}).
//
// Replay and live output join without losing a line: the log is opened
// (following) before the attach, so every line written before the attach
// is in the log and every line after it is in the live output; where the
// two overlap the live output is matched against the log's last lines and
// each line is sent once. Output the log never shows (a prompt without a
// newline) is held back at most junctionWait.
func (e *Engine) Attach(ctx context.Context, p protocol.AttachParams, in <-chan protocol.Message, out OutputFunc) (protocol.SessionResult, []string, error) {
	c, err := e.consoleTarget(ctx, "attach to", p.ContainerID)
	if err != nil {
		return protocol.SessionResult{}, nil, err
	}
	tty := isTTY(c)
	openStdin := c.Config != nil && c.Config.OpenStdin
	input := openStdin && !e.denyConsoleInput
	var warnings []string

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var log *logTail
	if p.Lines > 0 {
		if log, err = e.openLogTail(sctx, c.ID, p.Lines, tty); err != nil {
			return protocol.SessionResult{}, nil, dockerError(err, "replay the log of container %s", p.ContainerID)
		}
		if err := log.replay(sctx, p.Lines, out); err != nil {
			if ctx.Err() != nil {
				return protocol.SessionResult{Detached: true}, nil, nil
			}
			return protocol.SessionResult{}, nil, err
		}
	}

	actx, acancel := context.WithCancel(ctx)
	opened := time.AfterFunc(e.callTimeout, acancel)
	resp, err := e.cli.ContainerAttach(actx, c.ID, container.AttachOptions{Stream: true, Stdin: input, Stdout: true, Stderr: true})
	if !opened.Stop() && err == nil {
		resp.Close()
		err = context.DeadlineExceeded
	}
	acancel()
	if err != nil {
		if ctx.Err() != nil {
			return protocol.SessionResult{Detached: true}, nil, nil
		}
		return protocol.SessionResult{}, nil, dockerError(err, "attach to container %s", p.ContainerID)
	}
	defer resp.Close()
	// Docker keeps an attach to a container that stopped just before it
	// registered open forever: when the container stops, its last output
	// gets exitDrain to arrive, then the stream is closed.
	go func() {
		waitC, errC := e.cli.ContainerWait(sctx, c.ID, container.WaitConditionNotRunning)
		select {
		case <-waitC:
		case <-errC:
			return
		}
		select {
		case <-time.After(exitDrain):
			resp.Close()
		case <-sctx.Done():
		}
	}()

	var resize func(cols, rows int) error
	if tty {
		resize = func(cols, rows int) error {
			rctx, cancel := e.call(context.Background(), 0)
			defer cancel()
			return e.cli.ContainerResize(rctx, c.ID, container.ResizeOptions{Height: uint(rows), Width: uint(cols)})
		}
	}
	pump := &inputPump{w: resp.Conn, resize: resize, acceptIn: input}
	sink := out
	if log != nil {
		j := newJoiner(log, out)
		defer j.close()
		sink = j.liveOut
		go j.run(sctx)
	}
	res, err := e.runSession(ctx, &resp, tty, in, sink, pump, nil)
	if log != nil {
		log.close()
	}
	if pump.dropped > 0 {
		switch {
		case !openStdin:
			warnings = append(warnings, "input dropped ("+strconv.FormatInt(pump.dropped, 10)+
				" bytes): the container was not created with eggConfig.openStdin, so its main process has no stdin")
		case !input:
			warnings = append(warnings, "input dropped ("+strconv.FormatInt(pump.dropped, 10)+
				" bytes): console input is disabled on this node (ALLOW_CONSOLE_INPUT=false)")
		}
	}
	if err != nil || res.Detached {
		return res, warnings, err
	}
	code, err := e.containerExitCode(c.ID)
	if err != nil {
		return res, warnings, dockerError(err, "exit code of container %s", p.ContainerID)
	}
	res.ExitCode = &code
	return res, warnings, nil
}

// containerExitCode waits until the container is no longer running and
// returns its exit code.
func (e *Engine) containerExitCode(dockerID string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), exitWait+e.callTimeout)
	defer cancel()
	deadline := time.Now().Add(exitWait)
	poll := backoff.Constant(exitPoll)
	for {
		c, err := e.cli.ContainerInspect(ctx, dockerID)
		if err != nil {
			return 0, err
		}
		if c.State == nil {
			return 0, nil
		}
		if !c.State.Running || time.Now().After(deadline) {
			return c.State.ExitCode, nil
		}
		if err := poll.Wait(ctx); err != nil {
			return 0, err
		}
	}
}

// tailLine is one complete line of a log (with its "\n"), or a final piece
// without one.
type tailLine struct {
	stream string
	data   []byte
}

// logTail is a followed log stream split into lines.
type logTail struct {
	lines  chan tailLine
	cancel context.CancelFunc
	done   chan struct{}
}

// openLogTail opens the container's log, following, from its last n lines.
func (e *Engine) openLogTail(ctx context.Context, dockerID string, n int, tty bool) (*logTail, error) {
	lctx, cancel := context.WithCancel(ctx)
	opened := time.AfterFunc(e.callTimeout, cancel)
	rc, err := e.cli.ContainerLogs(lctx, dockerID, container.LogsOptions{
		ShowStdout: true, ShowStderr: true, Follow: true, Tail: strconv.Itoa(n),
	})
	if !opened.Stop() && err == nil {
		rc.Close()
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		return nil, err
	}
	t := &logTail{lines: make(chan tailLine, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer close(t.lines)
		defer rc.Close()
		lines := &lineCutter{}
		_ = demux(rc, tty, func(stream string, data []byte) error {
			for _, line := range lines.cut(stream, data) {
				select {
				case t.lines <- tailLine{stream: stream, data: line}:
				case <-lctx.Done():
					return lctx.Err()
				}
			}
			return nil
		})
	}()
	return t, nil
}

// maxPiece bounds a log line held while its end has not come: a workload
// that writes without newlines cannot grow the agent's memory; the piece
// goes out as it is (it then matches no live line, and the join waits
// junctionWait).
const maxPiece = 64 << 10

// lineCutter cuts each stream of a log into lines that keep their "\n".
type lineCutter struct{ partial map[string][]byte }

func (c *lineCutter) cut(stream string, data []byte) [][]byte {
	if c.partial == nil {
		c.partial = map[string][]byte{}
	}
	buf := append(c.partial[stream], data...)
	var out [][]byte
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		out = append(out, bytes.Clone(buf[:i+1]))
		buf = buf[i+1:]
	}
	for len(buf) >= maxPiece {
		out = append(out, bytes.Clone(buf[:maxPiece]))
		buf = buf[maxPiece:]
	}
	c.partial[stream] = bytes.Clone(buf)
	return out
}

// replay sends the log's history to out: until n lines went out, or the
// log was quiet for replayIdle, or replayMax passed.
func (t *logTail) replay(ctx context.Context, n int, out OutputFunc) error {
	deadline := time.NewTimer(replayMax)
	defer deadline.Stop()
	idle := time.NewTimer(replayIdle)
	defer idle.Stop()
	for sent := 0; sent < n; {
		select {
		case l, ok := <-t.lines:
			if !ok {
				return nil
			}
			if err := out(l.stream, l.data); err != nil {
				return err
			}
			sent++
			idle.Reset(replayIdle)
		case <-idle.C:
			return nil
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (t *logTail) close() {
	t.cancel()
	<-t.done
}

// joiner joins a replay to live output (see Attach): lines the log shows
// after the attach are sent as they come and matched against the live
// output, whose copies are then skipped; once every live stream has
// matched (or waited junctionWait) the log is closed and live output flows
// straight through.
type joiner struct {
	log  *logTail
	out  OutputFunc
	live chan liveChunk // from the session's output
	ok   chan error     // per live chunk: its delivery outcome
	stop chan struct{}

	streams  map[string]*joinStream
	joined   bool
	stopOnce sync.Once
}

type liveChunk struct {
	stream string
	data   []byte
}

type joinStream struct {
	logLines [][]byte // log lines seen after the attach, already sent
	logBytes int      // their size
	pending  []byte   // live output held back
	since    time.Time
	resolved bool
	skip     int // live bytes still to skip (already sent from the log)
}

func newJoiner(log *logTail, out OutputFunc) *joiner {
	return &joiner{log: log, out: out, live: make(chan liveChunk), ok: make(chan error), stop: make(chan struct{}),
		streams: map[string]*joinStream{}}
}

// liveOut is the session's OutputFunc while joining: it hands the chunk to
// run and waits for its delivery (backpressure is preserved).
func (j *joiner) liveOut(stream string, data []byte) error {
	select {
	case j.live <- liveChunk{stream, bytes.Clone(data)}:
	case <-j.stop:
		return context.Canceled
	}
	select {
	case err := <-j.ok:
		return err
	case <-j.stop:
		return context.Canceled
	}
}

func (j *joiner) close() { j.stopOnce.Do(func() { close(j.stop) }) }

func (j *joiner) stream(name string) *joinStream {
	s := j.streams[name]
	if s == nil {
		s = &joinStream{}
		j.streams[name] = s
	}
	return s
}

// run is the joining loop; it ends with ctx or when the joiner is closed.
func (j *joiner) run(ctx context.Context) {
	defer j.close()
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	logLines := j.log.lines
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.stop:
			return
		case l, ok := <-logLines:
			if !ok {
				logLines = nil
				continue
			}
			if j.joined {
				continue
			}
			s := j.stream(l.stream)
			if s.resolved {
				continue // the live output carries it
			}
			if err := j.out(l.stream, l.data); err != nil {
				j.fail(err)
				return
			}
			s.logLines = append(s.logLines, l.data)
			s.logBytes += len(l.data)
			// Only recent lines can meet the live output: keep a bounded window.
			for len(s.logLines) > 1 && s.logBytes > junctionMaxBytes {
				s.logBytes -= len(s.logLines[0])
				s.logLines[0] = nil
				s.logLines = s.logLines[1:]
			}
			j.match(l.stream, s)
		case c := <-j.live:
			j.ok <- j.takeLive(c)
		case <-tick.C:
		}
		if !j.joined {
			j.maybeJoin(start)
		}
	}
}

// takeLive handles one live chunk: passed through once joined (minus the
// bytes already sent from the log), else held back until its stream
// resolves.
func (j *joiner) takeLive(c liveChunk) error {
	s := j.stream(c.stream)
	if s.resolved {
		data := c.data
		if s.skip > 0 {
			n := min(s.skip, len(data))
			s.skip -= n
			data = data[n:]
		}
		if len(data) == 0 {
			return nil
		}
		return j.out(c.stream, data)
	}
	if len(s.pending) == 0 {
		s.since = time.Now()
	}
	s.pending = append(s.pending, c.data...)
	j.match(c.stream, s)
	return j.flush(c.stream, s)
}

// match looks for the live output's first complete lines among the log
// lines seen after the attach: the earliest position from which the log's
// lines and the live lines agree over all the lines both have.
func (j *joiner) match(name string, s *joinStream) {
	if s.resolved || len(s.pending) == 0 {
		return
	}
	live := bytes.SplitAfter(s.pending, []byte("\n"))
	if len(live[len(live)-1]) == 0 || !bytes.HasSuffix(live[len(live)-1], []byte("\n")) {
		live = live[:len(live)-1] // an incomplete last line does not count
	}
	if len(live) == 0 {
		return
	}
	for i := range s.logLines {
		n := min(len(s.logLines)-i, len(live))
		agree := true
		for k := 0; k < n && agree; k++ {
			agree = bytes.Equal(s.logLines[i+k], live[k])
		}
		if agree {
			sent := 0
			for _, l := range s.logLines[i:] {
				sent += len(l)
			}
			s.resolved, s.skip = true, sent
			return
		}
	}
}

// maybeJoin resolves streams whose live output waited long enough and
// switches to live output once every stream with live output resolved, or
// when nothing came live for junctionQuiet.
func (j *joiner) maybeJoin(start time.Time) {
	anyLive, all := false, true
	held := 0
	for _, s := range j.streams {
		held += len(s.pending)
	}
	for name, s := range j.streams {
		if len(s.pending) == 0 && !s.resolved {
			continue
		}
		anyLive = true
		if !s.resolved && (time.Since(s.since) >= junctionWait || held > junctionMaxBytes) {
			s.resolved = true
		}
		if !s.resolved {
			all = false
			continue
		}
		if err := j.flush(name, s); err != nil {
			j.fail(err)
			return
		}
	}
	if (anyLive && all) || (!anyLive && time.Since(start) >= junctionQuiet) {
		j.joined = true
		for _, s := range j.streams {
			s.resolved = true
		}
		j.log.cancel()
	}
}

// flush sends a resolved stream's held-back output.
func (j *joiner) flush(name string, s *joinStream) error {
	if !s.resolved || len(s.pending) == 0 {
		return nil
	}
	data := s.pending
	s.pending = nil
	if s.skip > 0 {
		n := min(s.skip, len(data))
		s.skip -= n
		data = data[n:]
	}
	if len(data) == 0 {
		return nil
	}
	return j.out(name, data)
}

// fail ends the joiner after a failed send; the session's next output
// call fails too (the failed send ended ctx, or the connection).
func (j *joiner) fail(error) { j.close() }
