package docker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Exec runs p.Cmd inside a managed, running container to completion
// (exec without stdin): its exit code and the start of each output stream,
// bounded by protocol.ExecOutput (at most ExecOutputCap raw bytes per
// stream, and ExecOutputEncodedCap JSON-encoded bytes for both: the result
// always fits in one frame, and an exec never holds more than that). Past p.Timeout the process is killed
// where possible and the result is a timeout error. A program the engine
// cannot start is a success with the engine's exit code (126/127) and its
// message in the output, as docker exec reports it.
func (e *Engine) Exec(ctx context.Context, p protocol.ExecParams) (protocol.ExecResult, error) {
	if e.denyExec {
		return protocol.ExecResult{}, errExecDisabled
	}
	c, err := e.consoleTarget(ctx, "exec in", p.ContainerID)
	if err != nil {
		return protocol.ExecResult{}, err
	}
	execID, err := e.createExec(ctx, c.ID, p, false)
	if err != nil {
		return protocol.ExecResult{}, err
	}
	timeout := p.Timeout
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := e.attachExec(tctx, execID, p)
	if err != nil {
		return protocol.ExecResult{}, err
	}
	stop := context.AfterFunc(tctx, resp.Close)
	defer stop()
	defer resp.Close()

	output := protocol.NewExecOutput(0)
	rerr := demux(resp.Reader, p.TTY, func(stream string, data []byte) error {
		output.Write(stream, data)
		return nil
	})
	if tctx.Err() != nil {
		return protocol.ExecResult{}, e.execAborted(ctx, c.ID, execID, p.ContainerID, timeout)
	}
	if rerr != nil {
		return protocol.ExecResult{}, dockerError(rerr, "read the output of exec in container %s", p.ContainerID)
	}
	code, err := e.execExitCode(tctx, execID)
	if err != nil {
		if tctx.Err() != nil {
			return protocol.ExecResult{}, e.execAborted(ctx, c.ID, execID, p.ContainerID, timeout)
		}
		return protocol.ExecResult{}, dockerError(err, "exit code of exec in container %s", p.ContainerID)
	}
	return output.Result(code), nil
}

// execAborted kills an exec that ran out of time (or whose command was
// cancelled) and returns the error that reports it.
func (e *Engine) execAborted(ctx context.Context, dockerID, execID, containerID string, timeout time.Duration) error {
	what := "was killed"
	if err := e.killExec(dockerID, execID); err != nil {
		what = "could not be killed and may still be running: " + err.Error()
	}
	if ctx.Err() != nil {
		return protocol.Errorf(protocol.CodeUnavailable, "exec in container %s ended before the process finished (%v); the process %s",
			containerID, context.Cause(ctx), what)
	}
	return protocol.Errorf(protocol.CodeTimeout, "exec in container %s: the process did not finish within %s; it %s",
		containerID, timeout, what)
}

// createExec creates the exec instance of p.
func (e *Engine) createExec(ctx context.Context, dockerID string, p protocol.ExecParams, stdin bool) (string, error) {
	opts := container.ExecOptions{
		User:         p.User,
		Tty:          p.TTY,
		AttachStdin:  stdin,
		AttachStdout: true,
		AttachStderr: true,
		Env:          envList(p.Env),
		WorkingDir:   p.WorkingDir,
		Cmd:          p.Cmd,
	}
	if size := consoleSize(p); size != nil {
		opts.ConsoleSize = size
	}
	cctx, cancel := e.call(ctx, 0)
	defer cancel()
	r, err := e.cli.ContainerExecCreate(cctx, dockerID, opts)
	if err != nil {
		return "", dockerError(err, "exec in container %s", p.ContainerID)
	}
	return r.ID, nil
}

// attachExec starts the exec with its streams attached.
func (e *Engine) attachExec(ctx context.Context, execID string, p protocol.ExecParams) (types.HijackedResponse, error) {
	// Opening the stream has the call timeout; the stream itself has none.
	actx, cancel := context.WithCancel(ctx)
	opened := time.AfterFunc(e.callTimeout, cancel)
	resp, err := e.cli.ContainerExecAttach(actx, execID, container.ExecAttachOptions{Tty: p.TTY, ConsoleSize: consoleSize(p)})
	if !opened.Stop() && err == nil {
		resp.Close()
		err = context.DeadlineExceeded
	}
	cancel() // a hijacked connection outlives its request's context
	if err != nil {
		return resp, dockerError(err, "start exec in container %s", p.ContainerID)
	}
	return resp, nil
}

// consoleSize is the initial [rows, cols] of an exec with a terminal, or nil.
func consoleSize(p protocol.ExecParams) *[2]uint {
	if !p.TTY || p.Cols <= 0 || p.Rows <= 0 {
		return nil
	}
	return &[2]uint{uint(p.Rows), uint(p.Cols)}
}

// ExecSession runs p.Cmd as an interactive session (exec with stdin):
// input from in (protocol.Stdin, protocol.Resize, applied in order once the
// process is attached and its initial terminal size set), output to out
// until the process exits ({exitCode}) or ctx ends ({detached: true}: its
// stdin is closed and, with a terminal, the process gets a hangup).
func (e *Engine) ExecSession(ctx context.Context, p protocol.ExecParams, in <-chan protocol.Message, out OutputFunc) (protocol.SessionResult, error) {
	if e.denyExec {
		return protocol.SessionResult{}, errExecDisabled
	}
	c, err := e.consoleTarget(ctx, "exec in", p.ContainerID)
	if err != nil {
		return protocol.SessionResult{}, err
	}
	execID, err := e.createExec(ctx, c.ID, p, true)
	if err != nil {
		return protocol.SessionResult{}, err
	}
	resp, err := e.attachExec(ctx, execID, p)
	if err != nil {
		return protocol.SessionResult{}, err
	}
	defer resp.Close()
	resize := func(cols, rows int) error {
		rctx, cancel := e.call(context.Background(), 0)
		defer cancel()
		return e.cli.ContainerExecResize(rctx, execID, container.ResizeOptions{Height: uint(rows), Width: uint(cols)})
	}
	if size := consoleSize(p); size != nil {
		// Old engines (API < 1.42) ignore ConsoleSize: set it before any
		// input goes in.
		_ = resize(p.Cols, p.Rows)
	}
	if !p.TTY {
		resize = nil
	}
	pump := &inputPump{w: resp.Conn, closeW: resp.CloseWrite, resize: resize, acceptIn: true}
	res, err := e.runSession(ctx, &resp, p.TTY, in, out, pump, func() {
		// Detach: close stdin; a terminal's process also gets the hangup
		// it would get when its terminal goes away.
		_ = resp.CloseWrite()
		if p.TTY {
			e.hangUp(c.ID, execID, p.ContainerID)
		}
	})
	if err != nil || res.Detached {
		return res, err
	}
	code, err := e.execExitCode(context.Background(), execID)
	if err != nil {
		return res, dockerError(err, "exit code of exec in container %s", p.ContainerID)
	}
	res.ExitCode = &code
	return res, nil
}

// hangupWait bounds how long a detach waits for the hangup before the
// session's result goes out (docs/protocol.md: within 2 s of the cancel); past it
// the hangup carries on in the background, bounded by the call timeout.
const hangupWait = 500 * time.Millisecond

// hangUp sends a detached terminal session's process the hangup it would
// get when its terminal goes away. A failure is a debug log line (the
// container and the reason, nothing of the session): the session has ended
// for the server either way, and the process may still run.
func (e *Engine) hangUp(dockerID, execID, containerID string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.signalExec(context.Background(), dockerID, execID, syscall.SIGHUP); err != nil {
			e.log.Debug("exec session detached, but its process could not be sent the hangup and may still run",
				"containerId", containerID, "err", err)
		}
	}()
	wait := time.NewTimer(hangupWait)
	defer wait.Stop()
	select {
	case <-done:
	case <-wait.C:
	}
}

// runSession pumps a hijacked session: input from in through pump, output
// to out, until the output ends (the process or container ended) or ctx
// ends (detach runs first, then the connection is closed). Detached is set
// when ctx ended first.
func (e *Engine) runSession(ctx context.Context, resp *types.HijackedResponse, tty bool, in <-chan protocol.Message, out OutputFunc,
	pump *inputPump, detach func()) (protocol.SessionResult, error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pump.run(in, done)
	}()
	detached := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(detached)
		if detach != nil {
			detach()
		}
		resp.Close()
	})
	rerr := demux(resp.Reader, tty, out)
	ctxEnded := !stop() // false: the AfterFunc has started
	close(done)
	resp.Close() // unblocks a pump stuck writing to a process that stopped reading
	wg.Wait()
	res := protocol.SessionResult{InputDroppedBytes: pump.dropped}
	if ctxEnded {
		<-detached
		res.Detached = true
		return res, nil
	}
	if rerr != nil && !isClosedConn(rerr) {
		return res, rerr
	}
	return res, nil
}

func isClosedConn(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "use of closed network connection") || errors.Is(err, context.Canceled))
}
