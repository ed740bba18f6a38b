package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// collector gathers a session's output per stream.
type collector struct {
	mu      sync.Mutex
	streams map[string]*bytes.Buffer
	changed chan struct{}
}

func newCollector() *collector {
	return &collector{streams: map[string]*bytes.Buffer{}, changed: make(chan struct{})}
}

func (c *collector) out(stream string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[stream] == nil {
		c.streams[stream] = &bytes.Buffer{}
	}
	c.streams[stream].Write(data)
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func (c *collector) text(stream string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.streams[stream]; b != nil {
		return b.String()
	}
	return ""
}

// waitFor waits until stream's output contains want.
func (c *collector) waitFor(t *testing.T, stream, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		got, ch := "", c.changed
		if b := c.streams[stream]; b != nil {
			got = b.String()
		}
		c.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s never showed %q; got %q", stream, want, got)
		}
	}
}

func execCmd(name string, args ...string) *protocol.Command {
	return &protocol.Command{ID: "x-" + randHex(4), Action: protocol.ActionExec, ContainerID: name,
		ConsoleOptions: protocol.ConsoleOptions{Cmd: args}}
}

func stdin(s string) protocol.Message { return protocol.Stdin{Data: []byte(s)} }

// TestExecRunToCompletion covers the results of exec without stdin.
func TestExecRunToCompletion(t *testing.T) {
	it := newIT(t)
	name := it.run("sleeper", false)
	tests := []struct {
		name       string
		args       []string
		tty        bool
		wantCode   []int
		wantOut    string
		wantErr    string
		truncated  bool
		outContain bool
	}{
		{name: "success", args: []string{"/workload", "-lines", "2", "-exit", "0"}, wantCode: []int{0}, wantOut: "stdout line 1\nstdout line 2\n"},
		{name: "non-zero", args: []string{"/workload", "-exit", "3"}, wantCode: []int{3}},
		{name: "stdout and stderr apart", args: []string{"/workload", "-lines", "1", "-stderr-lines", "2", "-exit", "0"},
			wantCode: []int{0}, wantOut: "stdout line 1\n", wantErr: "stderr line 1\nstderr line 2\n"},
		{name: "tty merges", args: []string{"/workload", "-lines", "1", "-stderr-lines", "1", "-exit", "0"}, tty: true,
			wantCode: []int{0}, wantOut: "stdout line 1\r\nstderr line 1\r\n"},
		{name: "missing binary", args: []string{"/no/such/program"}, wantCode: []int{126, 127}, wantOut: "no such file", outContain: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := execCmd(name, tt.args...)
			cmd.TTY = tt.tty
			res, err := it.eng.Exec(it.ctx, execOf(t, cmd))
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if !slicesContains(tt.wantCode, res.ExitCode) {
				t.Errorf("exit code %d, want one of %v", res.ExitCode, tt.wantCode)
			}
			if tt.outContain {
				if !strings.Contains(strings.ToLower(res.Stdout+res.Stderr), tt.wantOut) {
					t.Errorf("output %q %q, want it to contain %q", res.Stdout, res.Stderr, tt.wantOut)
				}
			} else if res.Stdout != tt.wantOut || res.Stderr != tt.wantErr {
				t.Errorf("stdout %q stderr %q, want %q %q", res.Stdout, res.Stderr, tt.wantOut, tt.wantErr)
			}
			if res.Truncated {
				t.Error("truncated, want not")
			}
		})
	}
	t.Run("output cap", func(t *testing.T) {
		// About 1.8 MB of output: the start is kept, up to the encoded cap
		// (a newline is 2 bytes in JSON), the rest read and discarded so
		// the process finishes.
		res, err := it.eng.Exec(it.ctx, execOf(t, execCmd(name, "/workload", "-flood", "-lines", "100000", "-exit", "0")))
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		enc := encodedLen(t, res.Stdout)
		if res.ExitCode != 0 || !res.Truncated || enc > protocol.ExecOutputEncodedCap || enc < protocol.ExecOutputEncodedCap-32 {
			t.Errorf("exit %d truncated %t encoded %d, want 0 true and the cap %d", res.ExitCode, res.Truncated, enc, protocol.ExecOutputEncodedCap)
		}
		if !strings.HasPrefix(res.Stdout, "flood line 1\nflood line 2\n") {
			t.Errorf("stdout starts %q, want the first lines", res.Stdout[:40])
		}
	})
	t.Run("NUL flood on both streams", func(t *testing.T) {
		// Review M2: 2 MiB of NULs per stream (12 MiB each as JSON) made
		// the result too large for a frame: the exec failed as internal,
		// after holding it several times over.
		res, err := it.eng.Exec(it.ctx, execOf(t, execCmd(name, "/workload", "nuls", strconv.Itoa(2<<20))))
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		enc := encodedLen(t, res.Stdout) + encodedLen(t, res.Stderr)
		if res.ExitCode != 0 || !res.Truncated || enc > protocol.ExecOutputEncodedCap {
			t.Errorf("exit %d truncated %t encoded %d, want 0 true at most %d", res.ExitCode, res.Truncated, enc, protocol.ExecOutputEncodedCap)
		}
		if strings.Trim(res.Stdout, "\x00") != "" || strings.Trim(res.Stderr, "\x00") != "" || len(res.Stdout) == 0 || len(res.Stderr) == 0 {
			t.Errorf("stdout %d and stderr %d bytes, want NULs on both", len(res.Stdout), len(res.Stderr))
		}
		t.Logf("2 MiB of NULs per stream: kept %d + %d bytes, %d encoded", len(res.Stdout), len(res.Stderr), enc)
	})
	t.Run("timeout kills", func(t *testing.T) {
		cmd := execCmd(name, "/workload", "-lines", "1")
		cmd.Timeout = intp(1)
		_, err := it.eng.Exec(it.ctx, execOf(t, cmd))
		wantCode(t, "Exec past its timeout", err, protocol.CodeTimeout)
		if !strings.Contains(err.Error(), "it was killed") {
			t.Errorf("error %q, want it to say the process was killed", err)
		}
		// Only the main process remains.
		top, terr := it.cli.ContainerTop(it.ctx, name, nil)
		if terr != nil {
			t.Fatal(terr)
		}
		if len(top.Processes) != 1 {
			t.Errorf("processes after the timeout: %v, want only the main one", top.Processes)
		}
	})
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestConsoleRefusals: stopped and unmanaged containers and the node-local
// switches.
func TestConsoleRefusals(t *testing.T) {
	it := newIT(t)
	running := it.run("running", false)
	stopped := it.name("stopped")
	it.create(it.createCmd(stopped, it.egg()))

	_, err := it.eng.Exec(it.ctx, execOf(t, execCmd(stopped, "/workload")))
	wantCode(t, "exec in a stopped container", err, protocol.CodeConflict)
	_, _, err = it.eng.Attach(it.ctx, attachOf(t, &protocol.Command{Action: protocol.ActionAttach, ContainerID: stopped}), nil, newCollector().out)
	wantCode(t, "attach to a stopped container", err, protocol.CodeConflict)
	_, err = it.eng.FollowStats(it.ctx, statsOf(t, &protocol.Command{Action: protocol.ActionStats, ContainerID: stopped, Follow: true}), nil)
	wantCode(t, "stats of a stopped container", err, protocol.CodeConflict)

	// A container another engine (node) created is not this one's.
	other := it.engine(Options{NodeID: "someone-else", VolumeRoots: []string{it.root}})
	_, err = other.Exec(it.ctx, execOf(t, execCmd(running, "/workload", "-exit", "0")))
	wantCode(t, "exec in an unmanaged container", err, protocol.CodeForbidden)
	_, _, err = other.Attach(it.ctx, attachOf(t, &protocol.Command{Action: protocol.ActionAttach, ContainerID: running}), nil, newCollector().out)
	wantCode(t, "attach to an unmanaged container", err, protocol.CodeForbidden)

	denied := it.engine(Options{NodeID: it.node, VolumeRoots: []string{it.root}, DenyExec: true})
	_, err = denied.Exec(it.ctx, execOf(t, execCmd(running, "/workload", "-exit", "0")))
	wantCode(t, "exec with ALLOW_EXEC=false", err, protocol.CodeForbidden)
	_, err = denied.ExecSession(it.ctx, execOf(t, execCmd(running, "/workload")), nil, newCollector().out)
	wantCode(t, "interactive exec with ALLOW_EXEC=false", err, protocol.CodeForbidden)
	top, err := it.cli.ContainerTop(it.ctx, running, nil)
	if err != nil || len(top.Processes) != 1 {
		t.Errorf("processes %v (%v): a refused exec must not have run", top.Processes, err)
	}
}

// TestExecSessionTTY drives an interactive terminal session: input queued
// before the process is attached arrives after the initial size is set,
// resizes apply in order with the input, and the exit code is reported.
func TestExecSessionTTY(t *testing.T) {
	it := newIT(t)
	name := it.run("tty", false)
	cmd := execCmd(name, "/workload", "console")
	cmd.TTY, cmd.Stdin, cmd.Cols, cmd.Rows = true, true, 100, 30
	in := make(chan protocol.Message, 16)
	in <- stdin("size\n") // before the session starts
	out := newCollector()
	type result struct {
		res protocol.SessionResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := it.eng.ExecSession(it.ctx, execOf(t, cmd), in, out.out)
		done <- result{res, err}
	}()
	out.waitFor(t, "stdout", "size 30 100")
	in <- protocol.Resize{Cols: 50, Rows: 20}
	in <- stdin("size\nhello\n")
	out.waitFor(t, "stdout", "size 20 50")
	out.waitFor(t, "stdout", "echo: hello")
	in <- stdin("exit 7\n")
	r := <-done
	if r.err != nil {
		t.Fatalf("ExecSession: %v", r.err)
	}
	if r.res.ExitCode == nil || *r.res.ExitCode != 7 || r.res.Detached {
		t.Fatalf("result %+v, want exit code 7", r.res)
	}
	if got := out.text("stderr"); got != "" {
		t.Errorf("stderr %q: a terminal session has one stream", got)
	}
}

// TestExecSessionPipes: without a terminal stdout and stderr stay apart,
// and eof closes the process's stdin.
func TestExecSessionPipes(t *testing.T) {
	it := newIT(t)
	name := it.run("pipes", false)
	cmd := execCmd(name, "/workload", "console")
	cmd.Stdin = true
	in := make(chan protocol.Message, 16)
	in <- stdin("one\nerr two\n")
	in <- protocol.Stdin{EOF: true}
	out := newCollector()
	res, err := it.eng.ExecSession(it.ctx, execOf(t, cmd), in, out.out)
	if err != nil {
		t.Fatalf("ExecSession: %v", err)
	}
	if res.ExitCode == nil || *res.ExitCode != 0 {
		t.Fatalf("result %+v, want exit code 0", res)
	}
	if got, want := out.text("stdout"), "ready\necho: one\nstdin closed\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got := out.text("stderr"); got != "two\n" {
		t.Errorf("stderr %q, want %q", got, "two\n")
	}
}

// TestExecSessionCancel: cancelling detaches within 2 s; the process gets
// the terminal's hangup (TTY) or the end of its stdin (no TTY) and ends.
// Each case has a container of its own, so a process one leaves behind
// shows in that case only.
func TestExecSessionCancel(t *testing.T) {
	it := newIT(t)
	for _, tty := range []bool{true, false} {
		t.Run(fmt.Sprintf("tty=%t", tty), func(t *testing.T) {
			name := it.run(fmt.Sprintf("cancel-tty-%t", tty), false)
			res := cancelledSession(t, it.eng, it.ctx, name, tty)
			if !res.Detached || res.ExitCode != nil {
				t.Errorf("result %+v, want detached", res)
			}
			waitProcesses(t, it, name, 1)
		})
	}
}

// cancelledSession runs a console exec session in container name, waits
// until the process is ready and cancels the session; it returns the
// session's result, which must come within 2 s of the cancel (docs/protocol.md).
func cancelledSession(t *testing.T, eng *Engine, parent context.Context, name string, tty bool) protocol.SessionResult {
	t.Helper()
	cmd := execCmd(name, "/workload", "console")
	cmd.Stdin, cmd.TTY = true, tty
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	out := newCollector()
	done := make(chan protocol.SessionResult, 1)
	go func() {
		res, err := eng.ExecSession(ctx, execOf(t, cmd), make(chan protocol.Message), out.out)
		if err != nil {
			t.Errorf("ExecSession: %v", err)
		}
		done <- res
	}()
	out.waitFor(t, "stdout", "ready")
	cancel()
	select {
	case res := <-done:
		return res
	case <-time.After(2 * time.Second):
		t.Fatal("no result within 2 s of the cancel")
	}
	return protocol.SessionResult{}
}

// TestExecSessionHangupWaitsForPid: the engine streams an exec's output
// before it records the process's pid (a window of seconds on a loaded
// host). A cancel inside that window must still hang up the terminal's
// process: the detach asks again until the pid is known. A hangup that
// cannot be sent at all is a debug log line, without the session's content.
func TestExecSessionHangupWaitsForPid(t *testing.T) {
	logs := &testsupport.Buffer{}
	it := newIT(t)
	tamper := &execInspectTamper{}
	eng := tamperedEngine(t, it, tamper, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	t.Run("pid late", func(t *testing.T) {
		name := it.run("pid-late", false)
		tamper.set(3, false) // the next 3 inspects of an exec: running, pid 0
		if res := cancelledSession(t, eng, it.ctx, name, true); !res.Detached {
			t.Errorf("result %+v, want detached", res)
		}
		waitProcesses(t, it, name, 1)
		if got := tamper.hidden(); got != 3 {
			t.Errorf("%d inspects answered without a pid, want 3: the detach did not ask until the pid was known", got)
		}
	})
	t.Run("no pid", func(t *testing.T) {
		name := it.run("no-pid", false)
		tamper.set(0, true) // every inspect of an exec fails
		if res := cancelledSession(t, eng, it.ctx, name, true); !res.Detached {
			t.Errorf("result %+v, want detached", res)
		}
		var line string
		testsupport.WaitFor(t, "the hangup failure to be logged", func() bool {
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "could not be sent the hangup") {
					line = l
				}
			}
			return line != ""
		})
		if line == "" {
			t.Fatalf("no debug line about the failed hangup; logs:\n%s", logs.String())
		}
		if !strings.Contains(line, "level=DEBUG") || !strings.Contains(line, "containerId="+name) {
			t.Errorf("log line %q: want a debug line naming the container", line)
		}
		if strings.Contains(line, "ready") {
			t.Errorf("log line %q carries the session's output", line)
		}
		tamper.set(0, false)
		// The process was not hung up: the engine could not say which it is.
		top, err := it.cli.ContainerTop(it.ctx, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(top.Processes) != 2 {
			t.Errorf("container runs %v, want the main process and the console still", top.Processes)
		}
	})
}

// execInspectTamper passes Docker API calls through to the daemon, except
// exec inspects: it answers the next hide of them as the engine does before
// it recorded the process (running, pid 0), and fails them all while fail
// is set.
type execInspectTamper struct {
	base  http.RoundTripper
	mu    sync.Mutex
	hide  int
	fail  bool
	faked int
}

func (tp *execInspectTamper) set(hide int, fail bool) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.hide, tp.fail, tp.faked = hide, fail, 0
}

func (tp *execInspectTamper) hidden() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.faked
}

func (tp *execInspectTamper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/exec/") || !strings.HasSuffix(r.URL.Path, "/json") {
		return tp.base.RoundTrip(r)
	}
	tp.mu.Lock()
	fail, hide := tp.fail, tp.hide > 0
	if hide {
		tp.hide--
		tp.faked++
	}
	tp.mu.Unlock()
	if fail {
		body := `{"message":"tampered: inspect refused"}`
		return &http.Response{StatusCode: http.StatusInternalServerError, Status: "500 Internal Server Error", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: r}, nil
	}
	resp, err := tp.base.RoundTrip(r)
	if err != nil || !hide || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	defer resp.Body.Close()
	var ins map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&ins); err != nil {
		return nil, err
	}
	ins["Running"], ins["Pid"], ins["ExitCode"] = true, 0, nil
	body, _ := json.Marshal(ins)
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// tamperedEngine is an Engine like it.eng whose API calls (not its
// hijacked streams) go through tp.
func tamperedEngine(t *testing.T, it *itEnv, tp *execInspectTamper, log *slog.Logger) *Engine {
	t.Helper()
	host, err := client.ParseHostURL(it.cli.DaemonHost())
	if err != nil {
		t.Fatal(err)
	}
	addr := host.Host // for unix://, the socket's path
	tp.base = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, host.Scheme, addr)
	}}
	cli, err := client.NewClientWithOpts(client.WithHost(it.cli.DaemonHost()), client.WithHTTPClient(&http.Client{Transport: tp}),
		client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := newEngine(cli, Options{NodeID: it.node, VolumeRoots: []string{it.root}, CallTimeout: 30 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return eng
}

// waitProcesses waits until the container runs n processes (30 s at most:
// the engine reports exits late on a loaded host).
func waitProcesses(t *testing.T, it *itEnv, name string, n int) {
	t.Helper()
	testsupport.WaitFor(t, fmt.Sprintf("%s to run %d processes", name, n), func() bool {
		top, err := it.cli.ContainerTop(it.ctx, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(top.Processes) == n
	})
}

// TestExecSessionBackpressure: a reader that does not read blocks the
// process's writes (the process makes no progress), and nothing is lost
// once it reads again.
func TestExecSessionBackpressure(t *testing.T) {
	it := newIT(t)
	name := it.run("flood", false)
	cmd := execCmd(name, "/workload", "-flood")
	cmd.Stdin = true
	ctx, cancel := context.WithCancel(it.ctx)
	defer cancel()
	gate := make(chan struct{})
	var mu sync.Mutex
	var got bytes.Buffer
	chunks := 0
	out := func(_ string, data []byte) error {
		mu.Lock()
		chunks++
		first := chunks == 1
		got.Write(data)
		mu.Unlock()
		if first {
			<-gate // the reader stalls after the first chunk
		}
		if got.Len() > 4<<20 {
			cancel()
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := it.eng.ExecSession(ctx, execOf(t, cmd), make(chan protocol.Message), out)
		done <- err
	}()
	time.Sleep(1500 * time.Millisecond) // the process would print millions of lines meanwhile
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("ExecSession: %v", err)
	}
	lines := strings.Split(got.String(), "\n")
	lines = lines[:len(lines)-1] // the cut last line
	for i, l := range lines {
		if want := "flood line " + strconv.Itoa(i+1); l != want {
			t.Fatalf("line %d = %q, want %q: output lost or reordered", i+1, l, want)
		}
	}
	// With the reader stalled the process could only fill the pipes
	// between it and the agent (a few hundred KiB), not run on.
	t.Logf("received %d lines (%d bytes) after a 1.5 s stall", len(lines), got.Len())
}

// TestAttachConsole: input reaches an openStdin container's main process,
// detaching does not close its stdin, a second attach replays history and
// the session ends with the container's exit code.
func TestAttachConsole(t *testing.T) {
	it := newIT(t)
	name := it.name("console")
	egg := it.egg("console")
	tty := false
	egg.TTY, egg.OpenStdin = &tty, true
	it.create(it.createCmd(name, egg))
	if c := it.inspect(name); !c.Config.OpenStdin || c.Config.StdinOnce || !c.Config.AttachStdin {
		t.Fatalf("OpenStdin %t StdinOnce %t AttachStdin %t, want true false true", c.Config.OpenStdin, c.Config.StdinOnce, c.Config.AttachStdin)
	}
	if err := it.eng.Start(it.ctx, name); err != nil {
		t.Fatal(err)
	}
	attach := func(ctx context.Context, lines int, in chan protocol.Message, out *collector) chan protocol.SessionResult {
		done := make(chan protocol.SessionResult, 1)
		go func() {
			cmd := &protocol.Command{Action: protocol.ActionAttach, ContainerID: name, Lines: &lines}
			res, warnings, err := it.eng.Attach(ctx, attachOf(t, cmd), in, out.out)
			if err != nil || len(warnings) > 0 {
				t.Errorf("Attach: %v %q", err, warnings)
			}
			done <- res
		}()
		return done
	}
	// First session: type, detach (with an eof, which must not close the
	// main process's stdin).
	ctx1, cancel1 := context.WithCancel(it.ctx)
	in := make(chan protocol.Message, 8)
	in <- stdin("first\n")
	out1 := newCollector()
	done1 := attach(ctx1, 0, in, out1)
	out1.waitFor(t, "stdout", "echo: first")
	in <- protocol.Stdin{EOF: true}
	in <- stdin("second\n")
	out1.waitFor(t, "stdout", "echo: second")
	cancel1()
	if res := <-done1; !res.Detached {
		t.Fatalf("first session %+v, want detached", res)
	}

	// Second session: the last 2 lines replayed, then live.
	in2 := make(chan protocol.Message, 8)
	out2 := newCollector()
	done2 := attach(it.ctx, 2, in2, out2)
	out2.waitFor(t, "stdout", "echo: second\n")
	in2 <- stdin("third\n")
	out2.waitFor(t, "stdout", "echo: third")
	in2 <- stdin("exit 5\n")
	res := <-done2
	if res.ExitCode == nil || *res.ExitCode != 5 {
		t.Fatalf("second session %+v, want the container's exit code 5", res)
	}
	if got, want := out2.text("stdout"), "echo: first\necho: second\necho: third\n"; got != want {
		t.Errorf("second session's output %q, want %q (2 lines of history, then live)", got, want)
	}
}

// TestAttachWithoutStdin: input for a container without openStdin (or with
// console input switched off) is dropped, counted and reported.
func TestAttachWithoutStdin(t *testing.T) {
	it := newIT(t)
	plain := it.run("plain", false)
	name := it.name("nostdin")
	egg := it.egg("console")
	egg.OpenStdin = true
	it.create(it.createCmd(name, egg))
	if err := it.eng.Start(it.ctx, name); err != nil {
		t.Fatal(err)
	}
	noInput := it.engine(Options{NodeID: it.node, VolumeRoots: []string{it.root}, DenyConsoleInput: true})
	for _, tc := range []struct {
		eng       *Engine
		container string
		want      string
	}{
		{it.eng, plain, "eggConfig.openStdin"},
		{noInput, name, "ALLOW_CONSOLE_INPUT=false"},
	} {
		ctx, cancel := context.WithCancel(it.ctx)
		in := make(chan protocol.Message)
		go func() {
			// Input is handled in order: once the empty message is taken,
			// the first one has been dropped, and the session is detached.
			for _, m := range []protocol.Message{stdin("exit 9\n"), protocol.Stdin{}} {
				select {
				case in <- m:
				case <-ctx.Done():
					return
				}
			}
			cancel()
		}()
		res, warnings, err := tc.eng.Attach(ctx, attachOf(t, &protocol.Command{Action: protocol.ActionAttach, ContainerID: tc.container}), in, newCollector().out)
		cancel()
		if err != nil || !res.Detached || res.InputDroppedBytes != 7 || len(warnings) != 1 || !strings.Contains(warnings[0], tc.want) {
			t.Errorf("%s: %+v %q %v, want detached with 7 bytes dropped and a warning naming %s", tc.container, res, warnings, err, tc.want)
		}
		if c := it.inspect(tc.container); !c.State.Running {
			t.Errorf("%s stopped: the input reached it", tc.container)
		}
	}
}

// TestAttachReplayJoin attaches with history while the container writes a
// numbered line every few milliseconds: every line appears exactly once,
// in order, across the replay and the live output.
func TestAttachReplayJoin(t *testing.T) {
	it := newIT(t)
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%t", tty), func(t *testing.T) {
			// About 8 s of output; the attach comes once some of it is in
			// the log, so it joins in the middle.
			const total = 1600
			name := it.run(fmt.Sprintf("join-%t", tty), tty, "-lines", strconv.Itoa(total), "-interval", "5ms", "-exit", "0")
			lines := protocol.MaxLogLines
			waitLogLines(t, it, name, 20)
			out := newCollector()
			res, _, err := it.eng.Attach(it.ctx, attachOf(t, &protocol.Command{Action: protocol.ActionAttach, ContainerID: name, Lines: &lines}), nil, out.out)
			if err != nil {
				t.Fatalf("Attach (the container had most of its %d lines still to write): %v", total, err)
			}
			if res.ExitCode == nil || *res.ExitCode != 0 {
				t.Errorf("result %+v, want exit code 0", res)
			}
			got := strings.Split(strings.TrimSuffix(strings.ReplaceAll(out.text("stdout"), "\r\n", "\n"), "\n"), "\n")
			for i := 0; i < total; i++ {
				if want := "stdout line " + strconv.Itoa(i+1); i >= len(got) || got[i] != want {
					g := "(nothing)"
					if i < len(got) {
						g = got[i]
					}
					t.Fatalf("line %d = %q, want %q (%d lines in all)", i+1, g, want, len(got))
				}
			}
			if len(got) != total {
				t.Errorf("%d lines, want %d", len(got), total)
			}
		})
	}
}

// waitLogLines waits until the container's log holds at least n lines.
func waitLogLines(t *testing.T, it *itEnv, name string, n int) {
	t.Helper()
	all := protocol.MaxLogLines
	testsupport.WaitFor(t, fmt.Sprintf("container %s to write %d log lines", name, n), func() bool {
		got, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name, Lines: &all}))
		if err != nil {
			t.Fatalf("Logs: %v", err)
		}
		return len(got) >= n
	})
}

// TestFollowStats samples a CPU-burning container: a sample at the start
// and one per tick of the interval (the test drives the ticks), the CPU
// figure is the CPU time the container got between two readings over the
// time between them, in CPUs, the memory limit is the container's, and the
// stream ends when the container stops.
//
// The engine takes a reading of every container once a second and hands it
// to everyone who asks. The test follows the engine's own stats stream
// alongside, finds there the readings the agent's samples came from (by
// their time), and computes the CPU figure itself from the container's CPU
// time over the wall-clock time between them. The agent computes it over
// the host's CPU time instead (as the docker CLI does), which the kernel
// counts in 10 ms ticks: the two agree within a few percent, whatever CPU
// the machine delivered (one CPU when idle, a fraction under load).
func TestFollowStats(t *testing.T) {
	it := newIT(t)
	name := it.name("burn")
	cmd := it.createCmd(name, it.egg("burn", "1"))
	cmd.Resources = &protocol.Resources{Memory: "64m"}
	dockerID, _ := it.create(cmd)
	if err := it.eng.Start(it.ctx, name); err != nil {
		t.Fatal(err)
	}
	readings := followEngineStats(t, it, dockerID)
	ticks := make(chan time.Time)
	intervals := make(chan time.Duration, 1)
	it.eng.statsTicker = func(d time.Duration) (<-chan time.Time, func()) {
		intervals <- d
		return ticks, func() {}
	}
	samples := make(chan protocol.StatsSample)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := it.eng.FollowStats(it.ctx, statsOf(t, &protocol.Command{ID: "s1", Action: protocol.ActionStats, ContainerID: name, Follow: true}),
			func(s protocol.StatsSample) error {
				samples <- s
				return nil
			})
		done <- result{n, err}
	}()
	next := func() protocol.StatsSample {
		t.Helper()
		select {
		case s := <-samples:
			return s
		case r := <-done:
			t.Fatalf("FollowStats ended early: %d samples, %v", r.n, r.err)
		}
		return protocol.StatsSample{}
	}
	got := []protocol.StatsSample{next()}
	if d := <-intervals; d != time.Second {
		t.Errorf("ticker interval %s, want the default 1 s", d)
	}
	for range 3 {
		// A window of a few of the engine's readings (one a second).
		seen := readings.count()
		testsupport.WaitFor(t, "two more readings of the engine", func() bool { return readings.count() >= seen+2 })
		ticks <- time.Now()
		got = append(got, next())
	}
	// No sample comes without a tick.
	select {
	case s := <-samples:
		t.Fatalf("a sample without a tick: %+v", s)
	case <-time.After(200 * time.Millisecond):
	}
	if err := it.eng.Stop(it.ctx, name, intp(1)); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case ticks <- time.Now(): // the next reading finds the container stopped
		r = <-done
	case r = <-done:
	case s := <-samples:
		t.Fatalf("a sample of a stopped container: %+v", s)
	}
	if r.err != nil || r.n != len(got) {
		t.Fatalf("FollowStats = %d, %v; want %d samples and the end of the stream with the container", r.n, r.err, len(got))
	}
	for i, s := range got {
		t.Logf("sample %d: cpu %.3f memory %d/%d pids %d at %s", i, s.CPU, s.MemoryBytes, s.MemoryLimitBytes, s.Pids, s.Timestamp)
		// The agent stamps the command id (protocol.StatsParams has none).
		if s.CommandID != "" || s.ContainerID != name || s.MemoryLimitBytes != 64<<20 || s.MemoryBytes == 0 || s.Pids == 0 {
			t.Errorf("sample %d = %+v", i, s)
		}
		if i == 0 {
			continue
		}
		prev, cur := readings.at(t, got[i-1].Timestamp), readings.at(t, s.Timestamp)
		wall := cur.Read.Sub(prev.Read)
		used := time.Duration(cur.CPUStats.CPUUsage.TotalUsage - prev.CPUStats.CPUUsage.TotalUsage)
		want := used.Seconds() / wall.Seconds()
		t.Logf("sample %d: cpu %.3f; the engine's readings: %s of CPU time in %s = %.3f CPUs", i, s.CPU, used, wall, want)
		if math.Abs(s.CPU-want) > 0.02+want/20 {
			t.Errorf("sample %d: cpu %.3f, want %.3f (within 5%% and 0.02): %s of CPU time in %s", i, s.CPU, want, used, wall)
		}
	}
}

// engineStats are the readings of a container's stats stream, by time.
type engineStats struct {
	mu   sync.Mutex
	byTS map[string]container.StatsResponse
}

// followEngineStats follows the engine's stats stream of a container
// until the test ends.
func followEngineStats(t *testing.T, it *itEnv, dockerID string) *engineStats {
	t.Helper()
	ctx, cancel := context.WithCancel(it.ctx)
	resp, err := it.cli.ContainerStats(ctx, dockerID, true)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	es := &engineStats{byTS: map[string]container.StatsResponse{}}
	stopped := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		_ = resp.Body.Close()
		<-stopped
	})
	go func() {
		defer close(stopped)
		dec := json.NewDecoder(resp.Body)
		for {
			var s container.StatsResponse
			if dec.Decode(&s) != nil {
				return
			}
			es.mu.Lock()
			es.byTS[protocol.Timestamp(s.Read)] = s
			es.mu.Unlock()
		}
	}()
	return es
}

// at is the engine's reading taken at ts (a sample's timestamp).
func (es *engineStats) at(t *testing.T, ts string) container.StatsResponse {
	t.Helper()
	var s container.StatsResponse
	testsupport.WaitFor(t, "a reading of the engine's stats stream at "+ts, func() bool {
		es.mu.Lock()
		defer es.mu.Unlock()
		var ok bool
		s, ok = es.byTS[ts]
		return ok
	})
	return s
}

// count is the number of readings so far.
func (es *engineStats) count() int {
	es.mu.Lock()
	defer es.mu.Unlock()
	return len(es.byTS)
}

// encodedLen is the size of s as a JSON string, without its quotes.
func encodedLen(t *testing.T, s string) int {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return len(b) - 2
}
