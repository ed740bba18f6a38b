package docker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Console sessions (docs/protocol.md): exec, attach and followed stats. The agent
// hands each session an input channel (protocol.Stdin and protocol.Resize
// values, in arrival order) and an output function that blocks while the
// server reads slowly; the Docker layer never buffers output beyond one
// chunk, so a slow server slows the process's writes (as over ssh) and
// memory stays bounded. Nothing of a session's input or output is logged.

// OutputFunc receives a session's output, a chunk at a time. It blocks
// under backpressure; an error ends the session.
type OutputFunc = func(stream string, data []byte) error

// errExecDisabled refuses exec under ALLOW_EXEC=false (node-local; the
// server cannot change it). ALLOW_CONSOLE_INPUT=false makes attach
// read-only: its input is dropped, counted and reported (attach.go).
var errExecDisabled = protocol.Errorf(protocol.CodeForbidden, "exec is disabled on this node (ALLOW_EXEC=false)")

// Session bounds.
const (
	chunkBytes = 16 << 10 // output bytes per stream message
	// exitWait bounds how long the engine may take to report the exit code
	// of a process whose output ended.
	exitWait = 5 * time.Second
	// exitPoll is how often the engine is asked again meanwhile.
	exitPoll = 20 * time.Millisecond
	// killWait bounds how long a killed exec may take to disappear.
	killWait = 2 * time.Second
)

// consoleTarget looks up a managed container for a console action and
// requires it to be running.
func (e *Engine) consoleTarget(ctx context.Context, action, id string) (container.InspectResponse, error) {
	c, err := e.lookup(ctx, action, id)
	if err != nil {
		return c, err
	}
	if s := c.State; s == nil || !s.Running || s.Paused || s.Restarting {
		state := "not running"
		if s != nil {
			state = string(s.Status)
		}
		return c, protocol.Errorf(protocol.CodeConflict, "%s container %s: the container is %s; start it first", action, id, state)
	}
	return c, nil
}

// demux reads a multiplexed Docker stream (8-byte frame headers) and hands
// each frame's payload to out in chunks of at most chunkBytes; a TTY
// stream is raw and goes to stdout as read.
func demux(r io.Reader, tty bool, out OutputFunc) error {
	buf := make([]byte, chunkBytes)
	if tty {
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if werr := out(protocol.StreamStdout, buf[:n]); werr != nil {
					return werr
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		size := int(binary.BigEndian.Uint32(hdr[4:]))
		stream := protocol.StreamStdout
		switch hdr[0] {
		case 0, 1:
		case 2:
			stream = protocol.StreamStderr
		case 3:
			msg, _ := io.ReadAll(io.LimitReader(r, int64(min(size, 4096))))
			return fmt.Errorf("stream error from the daemon: %s", strings.TrimSpace(string(msg)))
		default:
			return fmt.Errorf("unknown stream %d in frame header", hdr[0])
		}
		for size > 0 {
			n := min(size, len(buf))
			if _, err := io.ReadFull(r, buf[:n]); err != nil {
				return fmt.Errorf("stream ended inside a frame: %w", err)
			}
			size -= n
			if err := out(stream, buf[:n]); err != nil {
				return err
			}
		}
	}
}

// execExitCode waits until the engine reports the exec finished and returns
// its exit code.
func (e *Engine) execExitCode(ctx context.Context, execID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, exitWait)
	defer cancel()
	poll := backoff.Constant(exitPoll)
	for {
		ins, err := e.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			return 0, err
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		if err := poll.Wait(ctx); err != nil {
			return 0, err
		}
	}
}

// signalExec sends sig to an exec'd process. The Docker API cannot signal
// an exec, so this works only where the agent shares the host's PID
// namespace and may signal the process (root, or the same user): the pid
// the engine reports must be a process in the container's cgroup, so a pid
// of another namespace never hits an unrelated process. It reports why it
// could not. A process that has ended is not signalled.
func (e *Engine) signalExec(ctx context.Context, containerID, execID string, sig syscall.Signal) error {
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	pid, err := e.execPid(ctx, execID)
	if err != nil || pid == 0 {
		return err
	}
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil || !strings.Contains(string(cg), containerID) {
		return errors.New("the agent does not share the host's process namespace, and the Docker API cannot signal an exec'd process")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal the process: %w", err)
	}
	return nil
}

// pidPoll is how often execPid asks the engine again.
const pidPoll = 10 * time.Millisecond

// execPid waits until the engine reports the host process id of a running
// exec and returns it, or 0 once the exec has ended. The engine answers the
// attach before it starts the process, and it records the process id only
// after its runtime reports the start, while the process already runs and
// writes: until then an inspect says "not running, no exit code" (not
// started yet) or "running, pid 0"; on a loaded host that lasts seconds.
func (e *Engine) execPid(ctx context.Context, execID string) (int, error) {
	poll := backoff.Constant(pidPoll)
	for {
		ins, err := e.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			return 0, dockerError(err, "inspect exec")
		}
		switch {
		case ins.Running && ins.Pid > 0:
			return ins.Pid, nil
		case !ins.Running && (ins.Pid > 0 || ins.ExitCode != 0):
			return 0, nil // ended (a start that failed has an exit code, 126 or more)
		}
		if err := poll.Wait(ctx); err != nil {
			return 0, fmt.Errorf("the engine reported no process id for the exec in time: %w", err)
		}
	}
}

// killExec kills an exec'd process where possible and waits briefly until
// the engine sees it gone.
func (e *Engine) killExec(containerID, execID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), killWait+e.callTimeout)
	defer cancel()
	if err := e.signalExec(ctx, containerID, execID, syscall.SIGKILL); err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, killWait)
	defer wcancel()
	if _, err := e.execExitCode(wctx, execID); err != nil {
		return fmt.Errorf("the process was signalled but still runs: %w", err)
	}
	return nil
}

// inputPump applies a session's input in order until in is closed or done
// is closed: data is written to w (blocking while the process does not
// read), eof closes it for writing, resizes call resize. Input that cannot
// be delivered is counted in dropped, never logged.
type inputPump struct {
	w         io.Writer
	closeW    func() error // nil: eof is ignored (attach never closes the main process's stdin)
	resize    func(cols, rows int) error
	acceptIn  bool // false: the process has no stdin here; data is dropped
	dropped   int64
	writeFail bool
}

func (p *inputPump) run(in <-chan protocol.Message, done <-chan struct{}) {
	for {
		var m protocol.Message
		var ok bool
		select {
		case m, ok = <-in:
			if !ok {
				return
			}
		case <-done:
			return
		}
		switch m := m.(type) {
		case protocol.Stdin:
			if !p.acceptIn || p.writeFail {
				p.dropped += int64(len(m.Data))
				continue
			}
			if len(m.Data) > 0 {
				if _, err := p.w.Write(m.Data); err != nil {
					p.writeFail = true
					p.dropped += int64(len(m.Data))
					continue
				}
			}
			if m.EOF && p.closeW != nil {
				_ = p.closeW()
				p.writeFail = true // nothing can follow an eof
			}
		case protocol.Resize:
			if p.resize != nil && m.Valid() {
				_ = p.resize(m.Cols, m.Rows)
			}
		}
	}
}
