package packaging

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/testsupport"
)

// quickstart is a copy of the repository layout scripts/quickstart.sh needs
// (the script, bin/ with both programs) in a directory of its own, so that
// its state (.lormas) is the test's.
type quickstart struct {
	dir  string
	port string
	env  []string
}

func newQuickstart(t *testing.T) *quickstart {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binaries and runs them")
	}
	requireTool(t, "curl", "")
	repo := repoRoot(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(repo, "scripts/quickstart.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scripts/quickstart.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, repo, nil, "go", "build", "-o", filepath.Join(dir, "bin")+"/", "./cmd/lormas-server", "./cmd/lormas-agent")
	q := &quickstart{dir: dir, port: testsupport.FreePort(t)}
	q.env = []string{"PORT=" + q.port, "HEALTH_PORT=" + testsupport.FreePort(t)}
	t.Cleanup(func() {
		q.run(t, "stop")
		if pids := q.running(); len(pids) > 0 {
			t.Errorf("processes of the quickstart still run after stop: %v", pids)
		}
	})
	return q
}

func (q *quickstart) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return run(ctx, q.dir, q.env, "bash", append([]string{"scripts/quickstart.sh"}, args...)...)
}

// running lists the pids of this quickstart's programs still alive.
func (q *quickstart) running() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(exe, filepath.Join(q.dir, "bin")+"/") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

var exportLine = regexp.MustCompile(`export ADMIN=(\S+) NODE=(\S+)`)

// started checks a successful start and returns the node id it printed.
func (q *quickstart) started(t *testing.T, r result) string {
	t.Helper()
	if r.err != nil {
		t.Fatalf("quickstart: %s", r)
	}
	m := exportLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("quickstart printed no export line:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, "curl:") {
		t.Errorf("quickstart printed curl errors:\n%s", r)
	}
	if len(q.running()) != 2 {
		t.Errorf("running programs %v, want the server and the agent", q.running())
	}
	return m[2]
}

// failed checks a failed start: exit 1, the cause in one line of its own,
// and nothing left running.
func (q *quickstart) failed(t *testing.T, r result, cause string) {
	t.Helper()
	if exitCode(r.err) != 1 {
		t.Fatalf("quickstart = %v, want exit 1: %s", r.err, r)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if !strings.Contains(lines[0], cause) || len(lines) > 2 {
		t.Errorf("stderr, want its first line to name %q and at most the line saying what was stopped:\n%s", cause, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, "curl:") {
		t.Errorf("quickstart printed curl errors:\n%s", r)
	}
	if pids := q.running(); len(pids) > 0 {
		t.Errorf("a failed run left programs running: %v", pids)
	}
}

// TestQuickstart runs scripts/quickstart.sh as the README does: start, stop
// (saying that the containers keep running and how to remove them), start
// again after the server's data was removed (the stale node token is
// replaced by registering again, without a page of curl errors), and the
// failures a newcomer meets: a busy port names its holder, and a refused
// node token ends the run at once, leaving nothing running.
func TestQuickstart(t *testing.T) {
	q := newQuickstart(t)

	node := q.started(t, q.run(t))
	r := q.run(t, "stop")
	if r.err != nil || !strings.Contains(r.stdout, "keep running") ||
		!strings.Contains(r.stdout, "docker rm -f $(docker ps -aq --filter label=lormas.node="+node+")") {
		t.Errorf("stop does not say what happens to the containers:\n%s", r)
	}
	if pids := q.running(); len(pids) > 0 {
		t.Errorf("stop left programs running: %v", pids)
	}

	if err := os.RemoveAll(filepath.Join(q.dir, ".lormas/data")); err != nil {
		t.Fatal(err)
	}
	r = q.run(t)
	again := q.started(t, r)
	if again == node || !strings.Contains(r.stdout, "registering this host again") {
		t.Errorf("after rm -rf .lormas/data: node %s (was %s), want a new registration:\n%s", again, node, r.stdout)
	}

	// A restart stops the running pair first and reuses the node.
	if n := q.started(t, q.run(t)); n != again {
		t.Errorf("restart registered node %s, want %s again", n, again)
	}

	// The server rotated the token behind the checkout's back.
	if err := os.WriteFile(filepath.Join(q.dir, ".lormas/node-token"), []byte("not-the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	q.failed(t, q.run(t), "the server refused the node token")

	// Another program holds the port.
	q.run(t, "stop")
	ln, err := net.Listen("tcp", "127.0.0.1:"+q.port)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r = q.run(t)
	q.failed(t, r, "port "+q.port+" (lormas-server) is already in use")
	if !strings.Contains(r.stderr, "PORT=<port> scripts/quickstart.sh") {
		t.Errorf("busy port: no way out named:\n%s", r.stderr)
	}
	// The holder, by name and pid, where ss may show it (root sees every socket's process).
	if _, err := exec.LookPath("ss"); err == nil && os.Getuid() == 0 && !strings.Contains(r.stderr, "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("busy port: the holder (this test, pid %d) is not named:\n%s", os.Getpid(), r.stderr)
	}
	if _, err := os.Stat(filepath.Join(q.dir, ".lormas/server.pid")); err == nil {
		t.Error("busy port: a server was started anyway")
	}
}
