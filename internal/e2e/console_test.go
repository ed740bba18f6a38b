package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

var ctlBuild struct {
	once sync.Once
	err  error
}

// lormasctl builds the operator client once (TestMain builds the others).
func lormasctl(t *testing.T) string {
	t.Helper()
	path := filepath.Join(binDir, "lormasctl")
	ctlBuild.once.Do(func() {
		out, err := exec.Command("go", "build", "-race", "-o", path, "../../cmd/lormasctl").CombinedOutput()
		if err != nil {
			ctlBuild.err = fmt.Errorf("build lormasctl: %v: %s", err, out)
		}
	})
	if ctlBuild.err != nil {
		t.Fatal(ctlBuild.err)
	}
	return path
}

// ctl prepares a lormasctl command against the server.
func ctl(t *testing.T, a *api, args ...string) *exec.Cmd {
	cmd := exec.Command(lormasctl(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LORMAS_URL=" + a.base, "LORMAS_TOKEN=" + a.token}
	return cmd
}

// ctlRun runs lormasctl to its end and returns its output and exit code.
func ctlRun(t *testing.T, a *api, args ...string) (string, string, int) {
	t.Helper()
	cmd := ctl(t, a, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("lormasctl %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// reader collects what a process prints and waits for text in it.
type reader struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan struct{}
}

func newReader(r io.Reader) *reader {
	rd := &reader{ch: make(chan struct{}, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			rd.mu.Lock()
			rd.buf.Write(b[:n])
			rd.mu.Unlock()
			select {
			case rd.ch <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return rd
}

func (r *reader) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		got := r.buf.String()
		r.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("output never showed %q; got %q", want, got)
		}
	}
}

// TestConsole drives the console end to end with the built binaries:
// lormasctl run/ps/exec/exec -it (through a pseudo-terminal)/attach/stats,
// a browser-style WebSocket client with a one-time ticket, and an attach
// that the agent's SIGTERM ends.
func TestConsole(t *testing.T) {
	cli := dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	dataDir := t.TempDir()
	addr := testsupport.FreeAddr(t)
	a := &api{t: t}
	a.token = "admin-" + randomHex(t, 16)
	_, a2 := startServer(t, addr, dataDir, "ADMIN_TOKEN="+a.token)
	a.base = a2.base
	node := a.createNode("e2e-console")
	agentDir := t.TempDir()
	tokenFile := filepath.Join(agentDir, "node-token")
	if err := os.WriteFile(tokenFile, []byte(node.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := start(t, "lormas-agent", agentDir, append(agentEnv(addr, "e2e-console", filepath.Join(agentDir, "state")), "NODE_TOKEN_FILE="+tokenFile)...)
	a.waitConnected(node.ID, true, 30*time.Second)

	game := "e2e-game-" + randomHex(t, 4)
	shell := "e2e-shell-" + randomHex(t, 4)
	t.Cleanup(func() { removeContainer(t, cli, game); removeContainer(t, cli, shell) })
	if out, errOut, code := ctlRun(t, a, "run", "-d", "-i", "--pull", "never", game, image, "console"); code != 0 {
		t.Fatalf("run %s: %d %s %s", game, code, out, errOut)
	}
	if out, errOut, code := ctlRun(t, a, "run", "--pull", "never", "-m", "64m", shell, image); code != 0 {
		t.Fatalf("run %s: %d %s %s", shell, code, out, errOut)
	}
	if out, _, _ := ctlRun(t, a, "ps"); !strings.Contains(out, game) || !strings.Contains(out, shell) || !strings.Contains(out, "running") {
		t.Errorf("ps:\n%s", out)
	}

	t.Run("exec", func(t *testing.T) {
		out, errOut, code := ctlRun(t, a, "exec", shell, "/workload", "-lines", "1", "-stderr-lines", "1", "-exit", "3")
		if code != 3 || out != "stdout line 1\n" || errOut != "stderr line 1\n" {
			t.Errorf("exec: status %d stdout %q stderr %q, want 3 and the lines apart", code, out, errOut)
		}
	})

	t.Run("exec -it through a pseudo-terminal", func(t *testing.T) {
		cmd := ctl(t, a, "exec", "-it", shell, "/workload", "console")
		ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		out := newReader(ptmx)
		out.waitFor(t, "ready")
		_, _ = ptmx.Write([]byte("size\r"))
		out.waitFor(t, "size 30 100")
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		// The resize travels on its own; ask until it has arrived.
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.snapshot(), "size 40 120") && time.Now().Before(deadline) {
			_, _ = ptmx.Write([]byte("size\r"))
			time.Sleep(200 * time.Millisecond)
		}
		out.waitFor(t, "size 40 120")
		_, _ = ptmx.Write([]byte("hello\r"))
		out.waitFor(t, "echo: hello")
		_, _ = ptmx.Write([]byte("exit 4\r"))
		err = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 4 {
			t.Errorf("exec -it exit status %d (%v), want the process's 4", code, err)
		}
	})

	t.Run("attach with history", func(t *testing.T) {
		cmd := ctl(t, a, "attach", "--lines", "5", game)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out := newReader(stdout)
		out.waitFor(t, "ready\n") // replayed from the log
		_, _ = io.WriteString(stdin, "hello\n")
		out.waitFor(t, "echo: hello\n")
		_ = cmd.Process.Signal(syscall.SIGINT) // detach; the container keeps running
		_ = cmd.Wait()
		_, _, code := ctlRun(t, a, "exec", game, "/workload", "-exit", "0")
		if code != 0 {
			t.Fatalf("the console container stopped after a detach")
		}
		// A second attach replays what the first one typed.
		cmd = ctl(t, a, "attach", "--lines", "2", game)
		stdin, _ = cmd.StdinPipe()
		stdout, _ = cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out = newReader(stdout)
		out.waitFor(t, "echo: hello\n")
		_, _ = io.WriteString(stdin, "exit 6\n")
		_ = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 6 {
			t.Errorf("attach exit status %d (stderr %q), want the container's 6", code, stderr.String())
		}
	})

	t.Run("stats", func(t *testing.T) {
		cmd := ctl(t, a, "stats", shell)
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var rows []string
		for len(rows) < 3 && sc.Scan() {
			if strings.HasPrefix(sc.Text(), shell) {
				rows = append(rows, sc.Text())
			}
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		if len(rows) < 3 || !strings.Contains(rows[2], "/ 64MiB") || !strings.Contains(rows[2], "%") {
			t.Errorf("stats rows %q, want samples with the 64 MiB limit", rows)
		}
	})

	t.Run("browser WebSocket with a ticket", func(t *testing.T) {
		var tk struct {
			Ticket string `json:"ticket"`
		}
		base := "/api/nodes/" + node.ID + "/containers/" + shell
		if code := a.do("POST", base+"/tickets", a.token, map[string]string{"action": "exec"}, &tk); code != http.StatusCreated {
			t.Fatalf("ticket: %d", code)
		}
		c := dialConsole(t, addr, base+"/exec?cmd=/workload&cmd=console&ticket="+url.QueryEscape(tk.Ticket))
		c.waitFor(t, "ready")
		_ = c.conn.WriteMessage(gws.OpcodeBinary, []byte("hi\n"))
		c.waitFor(t, "echo: hi")
		_ = c.conn.WriteMessage(gws.OpcodeBinary, []byte("exit 2\n"))
		select {
		case res := <-c.result:
			if !strings.Contains(res, `"exitCode":2`) {
				t.Errorf("result %s, want exit code 2", res)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no result frame")
		}
	})

	t.Run("SIGTERM ends a session with its result", func(t *testing.T) {
		// A fresh console container: the game's main process exited above.
		gameID := "e2e-game2-" + randomHex(t, 4)
		t.Cleanup(func() { removeContainer(t, cli, gameID) })
		if _, errOut, code := ctlRun(t, a, "run", "-d", "-i", "--pull", "never", gameID, image, "console"); code != 0 {
			t.Fatalf("run: %s", errOut)
		}
		var tk struct {
			Ticket string `json:"ticket"`
		}
		base := "/api/nodes/" + node.ID + "/containers/" + gameID
		a.do("POST", base+"/tickets", a.token, map[string]string{"action": "attach"}, &tk)
		c := dialConsole(t, addr, base+"/attach?lines=1&ticket="+url.QueryEscape(tk.Ticket))
		c.waitFor(t, "ready")
		if code := agent.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
			t.Errorf("agent exit status %d after SIGTERM, want 0", code)
		}
		select {
		case res := <-c.result:
			if !strings.Contains(res, "shutting down") || !strings.Contains(res, `"detached":true`) {
				t.Errorf("result %s, want the session ended by the shutdown", res)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no result frame after the agent's SIGTERM")
		}
		if info, err := cli.ContainerInspect(ctxT(t, 10*time.Second), gameID); err != nil || !info.State.Running {
			t.Errorf("the container stopped with the agent (%v)", err)
		}
	})
}

func (r *reader) snapshot() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// browserConsole is a WebSocket client that, like a browser, cannot send
// an Authorization header.
type browserConsole struct {
	conn   *gws.Conn
	out    *reader
	pw     *io.PipeWriter
	result chan string
}

func dialConsole(t *testing.T, addr, path string) *browserConsole {
	t.Helper()
	pr, pw := io.Pipe()
	c := &browserConsole{out: newReader(pr), pw: pw, result: make(chan string, 1)}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + addr + path})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial console: %v (%d)", err, status)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return c
}

func (c *browserConsole) waitFor(t *testing.T, s string) { t.Helper(); c.out.waitFor(t, s) }

func (c *browserConsole) OnOpen(*gws.Conn)                {}
func (c *browserConsole) OnClose(*gws.Conn, error)        { _ = c.pw.Close() }
func (c *browserConsole) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (c *browserConsole) OnPong(*gws.Conn, []byte)        {}
func (c *browserConsole) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	if m.Opcode == gws.OpcodeBinary {
		_, _ = c.pw.Write(bytes.Clone(m.Bytes()))
		return
	}
	select {
	case c.result <- string(m.Bytes()):
	default:
	}
}
