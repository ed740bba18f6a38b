package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// rssSampler records the highest VmRSS of a process, sampled every 20 ms
// until stop.
type rssSampler struct {
	mu      sync.Mutex
	highest int64
	samples int
	stop    chan struct{}
	done    chan struct{}
}

func sampleRSS(t testing.TB, pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					s.mu.Lock()
					s.highest = max(s.highest, kb<<10)
					s.samples++
					s.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { s.end() })
	return s
}

// end stops sampling and returns the highest RSS seen and the number of
// samples; it is idempotent.
func (s *rssSampler) end() (int64, int) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.highest, s.samples
}

// TestConcurrentExecOutputIsBounded is review M2 against the built agent
// and real Docker: MAX_SESSIONS (64) execs at once, each printing 2 MiB of
// NUL bytes on stdout and on stderr (12 MiB each as JSON: \u0000). Counted
// in raw bytes, the output pushed the agent's heap to 3.1 GB and every
// result failed as internal (larger than a frame). Now each exec answers
// success with truncated: true in one frame, and the agent's peak RSS
// stays under 300 MiB.
func TestConcurrentExecOutputIsBounded(t *testing.T) {
	const (
		execs     = 64 // MAX_SESSIONS
		perStream = 2 << 20
		peakLimit = 300 << 20
	)
	if testing.Short() {
		t.Skip("the fast tier (-short) builds no binaries and needs no Docker")
	}
	cli := dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	bin := buildPlainAgent(t)
	name := "e2e-exec-mem-" + randomHex(t, 4)
	removeContainer(t, cli, name)
	t.Cleanup(func() { removeContainer(t, cli, name) })

	nodeID := "node-" + randomHex(t, 8)
	token := nodeToken(t, nodeID)
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	dir := t.TempDir()
	agent := start(t, bin, dir,
		"SERVER_URL="+srv.URL(),
		"NODE_TOKEN="+token,
		"NODE_NAME=e2e-exec-memory",
		"STATE_DIR="+dir+"/state",
		"HEALTH_ADDR=",
		"LOG_LEVEL=info",
	)
	pid := agent.cmd.Process.Pid
	srv.Expect(protocol.TypeAgentIdentify)

	send(t, srv, fmt.Sprintf(`{"type":"command","id":"create","action":"create","containerId":%q,"eggConfig":{"image":%q,"pullPolicy":"never"}}`, name, image))
	mustSucceed(t, srv, "create", 60*time.Second)
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"start","action":"start","containerId":%q}`, name))
	mustSucceed(t, srv, "start", 30*time.Second)
	idle, _ := procMemory(t, pid)

	sampler := sampleRSS(t, pid)
	began := time.Now()
	for i := range execs {
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"exec-%d","action":"exec","containerId":%q,"cmd":["/workload","nuls","%d"],"timeout":300}`, i, name, perStream))
	}
	results := map[string]protocol.CommandResult{}
	sizes := map[string]int{}
	testsupport.Eventually(t, 5*time.Minute, func() error {
		for _, r := range srv.Received() {
			if res, ok := r.Msg.(protocol.CommandResult); ok && strings.HasPrefix(res.CommandID, "exec-") {
				results[res.CommandID] = res
				sizes[res.CommandID] = len(r.Raw)
			}
		}
		if len(results) < execs {
			return fmt.Errorf("%d of %d execs answered", len(results), execs)
		}
		return nil
	})
	took := time.Since(began)
	peakSampled, samples := sampler.end()
	after, hwm := procMemory(t, pid)

	largest := 0
	for id, r := range results {
		largest = max(largest, sizes[id])
		if r.Status != protocol.StatusSuccess {
			t.Errorf("%s: %s %s (code %s), want success", id, r.Status, r.Error, r.Code)
			continue
		}
		raw, _ := json.Marshal(r.Result)
		var res protocol.ExecResult
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if res.ExitCode != 0 || !res.Truncated || len(res.Stdout) == 0 || len(res.Stderr) == 0 ||
			strings.Trim(res.Stdout, "\x00") != "" || strings.Trim(res.Stderr, "\x00") != "" {
			t.Errorf("%s: exit %d, truncated %v, %d + %d bytes: want 0, true and NULs on both streams",
				id, res.ExitCode, res.Truncated, len(res.Stdout), len(res.Stderr))
		}
	}
	t.Logf("%d concurrent execs of 2 x %s of NULs answered in %v; largest result frame %d bytes",
		execs, rssMiB(perStream), took.Round(time.Millisecond), largest)
	t.Logf("agent RSS: idle %s, highest sampled %s (%d samples), peak VmHWM %s, after %s",
		rssMiB(idle), rssMiB(peakSampled), samples, rssMiB(hwm), rssMiB(after))
	if largest > 1<<20 {
		t.Errorf("a result frame of %d bytes, over the default 1 MiB frame limit", largest)
	}
	if hwm > peakLimit {
		t.Errorf("agent peak RSS %s, want under %s: exec output is not bounded by its encoded size", rssMiB(hwm), rssMiB(peakLimit))
	}
}
