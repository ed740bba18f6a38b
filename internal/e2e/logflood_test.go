package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// The flood of these tests: numbered lines of floodLineBytes, written by the
// workload as fast as it can (the flood is 1.2 million such lines;
// scripts/logbench runs that one and prints the figures).
const (
	floodLines     = 300000
	floodLineBytes = 100
	// The agent's RSS may grow this much over idle during a flood.
	floodRSSGrowth = 64 << 20
)

// followed is one follow stream as the server received it.
type followed struct {
	lines    []int // line numbers, in arrival order
	gaps     []int
	gapAfter []int // index into lines after which each gap came
}

// collect reads the follow stream of id from what srv received; lineNo
// extracts a line's number.
func collect(t *testing.T, srv *agenttest.Server, id string) followed {
	t.Helper()
	var f followed
	for _, rec := range srv.Received() {
		m, ok := rec.Msg.(protocol.LogMessage)
		if !ok || m.CommandID != id {
			continue
		}
		if m.Gap > 0 {
			f.gaps = append(f.gaps, m.Gap)
			f.gapAfter = append(f.gapAfter, len(f.lines))
			continue
		}
		lines := m.Lines
		if m.Line != "" {
			lines = []string{m.Line}
		}
		for _, l := range lines {
			fields := strings.Fields(l)
			if len(fields) < 3 || fields[0] != "flood" {
				t.Fatalf("unexpected line %.60q", l)
			}
			n, err := strconv.Atoi(fields[2])
			if err != nil {
				t.Fatalf("line %.60q: %v", l, err)
			}
			f.lines = append(f.lines, n)
		}
	}
	return f
}

// check verifies that lines first..first+total-1 each arrived exactly once
// in order or lie inside a gap that counts exactly the lines missing there
// (total 0: up to the last line received). It returns the lines received
// and the lines in gaps.
func (f followed) check(t *testing.T, first, total int) (got, missing int) {
	t.Helper()
	next, g := first, 0
	for i, n := range f.lines {
		for ; g < len(f.gaps) && f.gapAfter[g] == i; g++ {
			next += f.gaps[g]
			missing += f.gaps[g]
		}
		if n != next {
			t.Fatalf("line %d arrived where %d was due: lost without a gap, repeated or out of order", n, next)
		}
		next++
	}
	for ; g < len(f.gaps); g++ {
		next += f.gaps[g]
		missing += f.gaps[g]
	}
	if total > 0 && next != first+total {
		t.Fatalf("lines and gaps account for lines %d..%d, want %d..%d", first, next-1, first, first+total-1)
	}
	return len(f.lines), missing
}

func logsResult(t *testing.T, r protocol.CommandResult) protocol.LogsResult {
	t.Helper()
	b, err := json.Marshal(r.Result)
	if err != nil {
		t.Fatal(err)
	}
	var res protocol.LogsResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("logs result %s: %v", b, err)
	}
	return res
}

// TestLogFlood runs the built agent (without the race detector) against a
// flooding container and a server that reads slowly, then fast:
//
//   - 300,000 lines of 100 bytes: every line arrives exactly once, in
//     order, or lies inside a reported gap whose count equals the lines
//     missing there, and the result's dropped is the sum of the gaps; the
//     agent's RSS, sampled every 100 ms, grows at most 64 MiB over idle;
//   - a cancel in the middle of an endless flood ends the stream at once,
//     with a success that counts the lines sent and dropped;
//   - a connection lost in the middle of an endless flood ends the stream;
//     its result, with its counts, arrives after the reconnect.
//
// The container's log files are large enough here that Docker's own
// follower never falls behind a rotation: what is checked is the agent.
// The engine ending streams early is shown by the docker package's tests.
func TestLogFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a Docker flood against a built binary: not in the -short tier")
	}
	cli := dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	bin := buildPlainAgent(t)
	nodeID := "node-" + randomHex(t, 8)
	token := nodeToken(t, nodeID)
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token, MaxMessageBytes: 4 << 20})
	dir := t.TempDir()
	agent := start(t, bin, dir,
		"SERVER_URL="+srv.URL(),
		"NODE_TOKEN="+token,
		"NODE_NAME=e2e-flood",
		"STATE_DIR="+dir+"/state",
		"LOG_LEVEL=info",
		"HEALTH_ADDR=",
		"HEARTBEAT_INTERVAL=1h",
		"RECONNECT_DELAY=100ms",
		"RECONNECT_MAX_DELAY=500ms",
		"VOLUME_ROOTS="+dir,
		"CONTAINER_LOG_MAX_SIZE=100m",
		"CONTAINER_LOG_MAX_FILE=2",
	)
	srv.Expect(protocol.TypeAgentIdentify)
	srv.Expect(protocol.TypeInventory)

	seq := 0
	run := func(name string, args ...string) {
		t.Helper()
		removeContainer(t, cli, name)
		t.Cleanup(func() { removeContainer(t, cli, name) })
		tty := false
		seq++
		create := protocol.Command{ID: fmt.Sprint("create-", seq), Action: protocol.ActionCreate, ContainerID: name,
			EggConfig: &protocol.EggConfig{Image: image, Command: args, TTY: &tty, PullPolicy: protocol.PullNever}}
		startCmd := protocol.Command{ID: fmt.Sprint("start-", seq), Action: protocol.ActionStart, ContainerID: name}
		for _, c := range []protocol.Command{create, startCmd} {
			if err := srv.Send(c); err != nil {
				t.Fatal(err)
			}
			mustSucceed(t, srv, c.ID, time.Minute)
		}
	}
	follow := func(id, name string) {
		t.Helper()
		if err := srv.Send(protocol.Command{ID: id, Action: protocol.ActionLogs, ContainerID: name, Follow: true}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("slow then fast server", func(t *testing.T) {
		name := "e2e-flood-" + randomHex(t, 4)
		// The flood starts after the stream is open.
		run(name, "-delay", "3s", "-flood", "-lines", strconv.Itoa(floodLines), "-pad", strconv.Itoa(floodLineBytes), "-exit", "0")
		time.Sleep(300 * time.Millisecond) // let the agent settle after create and start
		idle := vmRSS(t, agent.cmd.Process.Pid)

		// About 1 MB/s: a frame of up to 64 KiB of lines every 50 ms.
		srv.SetReadDelay(50 * time.Millisecond)
		follow("flood", name)
		var peak int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", agent.cmd.Process.Pid)); err == nil {
						for _, l := range strings.Split(string(b), "\n") {
							if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
								kb, _ := strconv.ParseInt(f[1], 10, 64)
								peak = max(peak, kb<<10)
							}
						}
					}
				case <-stop:
					return
				}
			}
		}()
		time.Sleep(3*time.Second + 10*time.Second) // the delay, then ten slow seconds
		srv.SetReadDelay(0)
		r := resultWithin(t, srv, "flood", 3*time.Minute)
		close(stop)
		<-sampled
		if r.Status != protocol.StatusSuccess {
			t.Fatalf("result %+v, want success (the container exited)", r)
		}
		res := logsResult(t, r)
		f := collect(t, srv, "flood")
		got, missing := f.check(t, 1, floodLines)
		if res.Dropped != missing || res.Sent != got {
			t.Errorf("result dropped %d sent %d; the stream had %d lines in gaps and %d received", res.Dropped, res.Sent, missing, got)
		}
		if missing == 0 {
			t.Errorf("no line dropped although the server read %d MB at 1 MB/s", floodLines*floodLineBytes>>20)
		}
		if f.lines[len(f.lines)-1] != floodLines {
			t.Errorf("last line received %d, want %d (the newest are kept)", f.lines[len(f.lines)-1], floodLines)
		}
		if growth := peak - idle; growth > floodRSSGrowth {
			t.Errorf("agent RSS grew by %d MiB over idle (%d MiB), want at most %d MiB", growth>>20, idle>>20, floodRSSGrowth>>20)
		}
		t.Logf("%d lines: %d received, %d in %d gaps; agent RSS idle %.1f MiB, peak %.1f MiB (+%.1f MiB)",
			floodLines, got, missing, len(f.gaps), float64(idle)/(1<<20), float64(peak)/(1<<20), float64(peak-idle)/(1<<20))
	})

	// An endless flood for the next two, five times what the server reads
	// but at a pace Docker's own follower keeps up with on its log files
	// (at full speed it falls behind their rotation and skips lines that
	// nobody can count).
	name := "e2e-flood-endless-" + randomHex(t, 4)
	run(name, "-flood", "-rate", "50000", "-pad", strconv.Itoa(floodLineBytes))

	t.Run("cancel mid-flood", func(t *testing.T) {
		srv.SetReadDelay(20 * time.Millisecond)
		defer srv.SetReadDelay(0)
		follow("cancelled", name)
		testsupport.Eventually(t, time.Minute, func() error {
			if n := len(collect(t, srv, "cancelled").lines); n < 20000 {
				return fmt.Errorf("%d lines so far", n)
			}
			return nil
		})
		if err := srv.Send(protocol.Cancel{CommandID: "cancelled"}); err != nil {
			t.Fatal(err)
		}
		srv.SetReadDelay(0)
		r := resultWithin(t, srv, "cancelled", 30*time.Second)
		res := logsResult(t, r)
		if r.Status != protocol.StatusSuccess {
			t.Fatalf("result %+v, want success", r)
		}
		f := collect(t, srv, "cancelled")
		first := 0
		if len(f.lines) > 0 {
			first = f.lines[0] // the stream began inside the tail of an ongoing flood
		}
		got, missing := f.check(t, first, 0)
		if got != res.Sent || res.Dropped < missing {
			t.Errorf("received %d lines and %d in gaps; result sent %d dropped %d", got, missing, res.Sent, res.Dropped)
		}
		if st := inspect(t, cli, name).State; st == nil || !st.Running {
			t.Error("the container stopped: cancel must end only the stream")
		}
		t.Logf("cancelled: %d received, %d in gaps, result sent %d dropped %d", got, missing, res.Sent, res.Dropped)
	})

	t.Run("connection lost mid-flood", func(t *testing.T) {
		srv.SetReadDelay(20 * time.Millisecond)
		follow("cut", name)
		testsupport.Eventually(t, time.Minute, func() error {
			if n := len(collect(t, srv, "cut").lines); n < 20000 {
				return fmt.Errorf("%d lines so far", n)
			}
			return nil
		})
		conns := srv.Connections()
		srv.DropConns()
		srv.SetReadDelay(0)
		if err := srv.WaitConnections(ctxT(t, time.Minute), conns+1); err != nil {
			t.Fatal(err)
		}
		r := resultWithin(t, srv, "cut", time.Minute)
		res := logsResult(t, r)
		if r.Status != protocol.StatusError || r.Code != protocol.CodeUnavailable {
			t.Errorf("result %+v, want unavailable: the stream's connection was lost", r)
		}
		for _, rec := range srv.Received() {
			if m, ok := rec.Msg.(protocol.CommandResult); ok && m.CommandID == "cut" && rec.Conn <= conns {
				t.Errorf("the result arrived on connection %d, want one after the reconnect", rec.Conn)
			}
		}
		f := collect(t, srv, "cut")
		got, _ := f.check(t, f.lines[0], 0)
		if res.Sent < got || res.Sent+res.Dropped == 0 {
			t.Errorf("received %d lines; result sent %d dropped %d", got, res.Sent, res.Dropped)
		}
		t.Logf("cut: %d received, result sent %d (lost in transit %d) dropped %d", got, res.Sent, res.Sent-got, res.Dropped)
	})
}
