package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/lxzan/gws"
	"golang.org/x/term"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// detachKeys end an attach or exec session from the keyboard, as docker's
// default: ctrl-p ctrl-q.
var detachKeys = []byte{0x10, 0x11}

func (c *cli) execCmd(args []string) error {
	var (
		interactive, tty bool
		user, workdir    string
		env              []string
		timeout          int
	)
	f := c.newFlags("exec")
	f.Bool(&interactive, "i", "interactive", "Keep STDIN open and send it to the process")
	f.Bool(&tty, "t", "tty", "Allocate a pseudo-TTY")
	f.String(&user, "u", "user", "", "Username or UID (format: <name|uid>[:<group|gid>])")
	f.String(&workdir, "w", "workdir", "", "Working directory inside the container")
	f.List(&env, "e", "env", "Set environment variables: KEY=VALUE")
	f.Int(&timeout, "", "timeout", 0, "Seconds before a command without -i/-t is killed (default 60)")
	rest, err := f.Parse(args)
	if err != nil {
		return err
	}
	if len(rest) < 2 {
		return usagef("\"exec\" requires at least 2 arguments: CONTAINER COMMAND [ARG...]")
	}
	envMap, err := keyValues(env, "env")
	if err != nil {
		return err
	}
	path, err := c.containerPath(rest[0], "exec")
	if err != nil {
		return err
	}
	if !interactive && !tty {
		return c.execOnce(path, rest[1:], user, workdir, envMap, timeout)
	}
	q := url.Values{"cmd": rest[1:]}
	if tty {
		q.Set("tty", "1")
	}
	if user != "" {
		q.Set("user", user)
	}
	if workdir != "" {
		q.Set("workingDir", workdir)
	}
	for _, kv := range env {
		q.Add("env", kv)
	}
	return c.session(path, q, tty, interactive)
}

// execOnce runs a command to completion and passes on its output and exit
// code.
func (c *cli) execOnce(path string, cmd []string, user, workdir string, env map[string]string, timeout int) error {
	body := map[string]any{"cmd": cmd, "user": user, "workingDir": workdir, "env": env}
	if timeout > 0 {
		body["timeout"] = timeout
	}
	var res struct {
		Status   protocol.Status     `json:"status"`
		Result   protocol.ExecResult `json:"result"`
		Error    string              `json:"error"`
		Code     protocol.Code       `json:"code"`
		Warnings []string            `json:"warnings"`
	}
	if err := c.api.do(c.ctx, "POST", path, body, &res); err != nil {
		return err
	}
	if res.Status != protocol.StatusSuccess {
		return &apiError{Msg: res.Error, Code: res.Code}
	}
	_, _ = io.WriteString(c.stdout, res.Result.Stdout)
	_, _ = io.WriteString(c.stderr, res.Result.Stderr)
	if res.Result.Truncated {
		fmt.Fprintf(c.stderr, "WARNING: output truncated: each stream keeps its start, at most %d bytes, and both together at most %d bytes as JSON\n",
			protocol.ExecOutputCap, protocol.ExecOutputEncodedCap)
	}
	if res.Result.ExitCode != 0 {
		return &exitCodeError{res.Result.ExitCode}
	}
	return nil
}

func (c *cli) attachCmd(args []string) error {
	var lines int
	f := c.newFlags("attach")
	f.Int(&lines, "", "lines", 0, "Replay this many lines of the container's log first")
	rest, err := f.Parse(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("\"attach\" requires exactly 1 argument: CONTAINER")
	}
	return c.attach(rest[0], lines)
}

// attach attaches to a container's console; its terminal is raw when the
// container has one.
func (c *cli) attach(container string, lines int) error {
	var info protocol.InspectResult
	if err := c.command(protocol.Command{Action: protocol.ActionInspect, ContainerID: container}, &info); err != nil {
		return err
	}
	if !info.Running {
		return fmt.Errorf("you cannot attach to a stopped container, start it first")
	}
	path, err := c.containerPath(container, "attach")
	if err != nil {
		return err
	}
	q := url.Values{}
	if lines > 0 {
		q.Set("lines", strconv.Itoa(lines))
	}
	return c.session(path, q, info.TTY, true)
}

// session bridges the terminal to a console WebSocket until it ends, and
// returns the process's exit code as an *exitCodeError when not zero.
func (c *cli) session(path string, q url.Values, tty, sendStdin bool) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	stdinFile, _ := c.stdin.(*os.File)
	stdoutFile, _ := c.stdout.(*os.File)
	raw := tty && stdinFile != nil && term.IsTerminal(int(stdinFile.Fd()))
	cols, rows := 0, 0
	if stdoutFile != nil && term.IsTerminal(int(stdoutFile.Fd())) {
		cols, rows, _ = term.GetSize(int(stdoutFile.Fd()))
	}
	if tty && cols > 0 && strings.HasSuffix(path, "/exec") {
		q.Set("cols", strconv.Itoa(cols))
		q.Set("rows", strconv.Itoa(rows))
	}
	u := *cl.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += path
	u.RawQuery = q.Encode()
	h := &sessionHandler{out: c.stdout, done: make(chan struct{})}
	conn, resp, err := gws.NewClient(h, &gws.ClientOption{
		Addr:          u.String(),
		RequestHeader: http.Header{"Authorization": {"Bearer " + cl.token}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return &apiError{Status: resp.StatusCode, Msg: fmt.Sprintf("the server refused the session (HTTP %d)", resp.StatusCode)}
		}
		return fmt.Errorf("open console: %v", err)
	}
	h.conn = conn
	go conn.ReadLoop()

	if raw {
		old, err := term.MakeRaw(int(stdinFile.Fd()))
		if err != nil {
			_ = conn.WriteClose(1000, nil)
			return fmt.Errorf("terminal raw mode: %w", err)
		}
		defer func() { _ = term.Restore(int(stdinFile.Fd()), old) }()
	}
	if tty && stdoutFile != nil {
		resize := func() {
			if w, hh, err := term.GetSize(int(stdoutFile.Fd())); err == nil {
				h.write(gws.OpcodeText, []byte(fmt.Sprintf(`{"type":"resize","cols":%d,"rows":%d}`, w, hh)))
			}
		}
		if !strings.HasSuffix(path, "/exec") {
			resize()
		}
		stop := notifyResize(resize)
		defer stop()
	}
	detached := make(chan struct{})
	if sendStdin {
		go c.pumpStdin(h, tty, detached)
	}
	select {
	case <-h.done:
	case <-detached:
		_ = conn.WriteClose(1000, []byte("detached"))
		<-h.done
		if raw {
			fmt.Fprint(c.stderr, "\r\n")
		}
		fmt.Fprintln(c.stderr, "read escape sequence")
		return nil
	case <-c.ctx.Done():
		_ = conn.WriteClose(1000, nil)
		<-h.done
		return &exitCodeError{130}
	}
	return h.outcome()
}

// pumpStdin sends the local input; the detach keys end the session.
func (c *cli) pumpStdin(h *sessionHandler, tty bool, detached chan struct{}) {
	buf := make([]byte, 32<<10)
	var prev byte
	for {
		n, err := c.stdin.Read(buf)
		if n > 0 {
			data := buf[:n]
			if tty {
				if i := detachIndex(prev, data); i >= 0 {
					if i > 0 {
						h.write(gws.OpcodeBinary, data[:i])
					}
					close(detached)
					return
				}
				prev = data[n-1]
			}
			if h.write(gws.OpcodeBinary, data) != nil {
				return
			}
		}
		if err != nil {
			if !tty {
				h.write(gws.OpcodeText, []byte(`{"type":"eof"}`))
			}
			return
		}
	}
}

// detachIndex finds the detach sequence in data (prev is the byte before
// it); it returns where the sequence starts in data (0 when it started in
// the previous read), or -1.
func detachIndex(prev byte, data []byte) int {
	if prev == detachKeys[0] && data[0] == detachKeys[1] {
		return 0
	}
	if i := bytes.Index(data, detachKeys); i >= 0 {
		return i
	}
	return -1
}

// sessionHandler receives the session's frames: output bytes, then the
// command_result as a text frame.
type sessionHandler struct {
	conn    *gws.Conn
	out     io.Writer
	wmu     sync.Mutex
	result  []byte
	closeBy error
	done    chan struct{}
	once    sync.Once
}

func (h *sessionHandler) write(op gws.Opcode, data []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.conn.WriteMessage(op, data)
}

func (h *sessionHandler) OnOpen(*gws.Conn)             {}
func (h *sessionHandler) OnPing(c *gws.Conn, p []byte) { _ = h.write(gws.OpcodePong, p) }
func (h *sessionHandler) OnPong(*gws.Conn, []byte)     {}
func (h *sessionHandler) OnClose(_ *gws.Conn, err error) {
	h.closeBy = err
	h.once.Do(func() { close(h.done) })
}

func (h *sessionHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if m.Opcode == gws.OpcodeBinary {
		_, _ = h.out.Write(m.Bytes())
		return
	}
	h.result = bytes.Clone(m.Bytes())
}

// outcome turns the session's end into the command's error.
func (h *sessionHandler) outcome() error {
	if h.result == nil {
		var ce *gws.CloseError
		if errors.As(h.closeBy, &ce) && ce.Code != 1000 {
			return fmt.Errorf("console closed by the server: %s", ce.Reason)
		}
		return errors.New("console closed before the session ended")
	}
	var res struct {
		Status protocol.Status        `json:"status"`
		Result protocol.SessionResult `json:"result"`
		Error  string                 `json:"error"`
		Code   protocol.Code          `json:"code"`
	}
	if err := json.Unmarshal(h.result, &res); err != nil {
		return fmt.Errorf("unreadable session result: %v", err)
	}
	if res.Status != protocol.StatusSuccess {
		return &apiError{Msg: res.Error, Code: res.Code}
	}
	if res.Result.ExitCode != nil && *res.Result.ExitCode != 0 {
		return &exitCodeError{*res.Result.ExitCode}
	}
	return nil
}
