package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// plainAgentName is lormas-agent built without the race detector: its
// shadow memory would multiply the RSS this file measures.
const plainAgentName = "lormas-agent-norace"

var (
	plainOnce sync.Once
	plainErr  error
)

// buildPlainAgent builds plainAgentName into binDir once.
func buildPlainAgent(t testing.TB) string {
	t.Helper()
	plainOnce.Do(func() {
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version=e2e-test", "-o", filepath.Join(binDir, plainAgentName), "../../cmd/lormas-agent")
		out, err := cmd.CombinedOutput()
		if err != nil {
			plainErr = fmt.Errorf("build %s: %v\n%s", plainAgentName, err, out)
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainAgentName
}

// procMemory reads the VmRSS and VmHWM (peak RSS) of pid, in bytes.
func procMemory(t testing.TB, pid int) (rss, hwm int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm
}

func rssMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// floodEnvironment returns a JSON object of about size bytes: many ordinary
// variables, the shape that costs the most once decoded into a map.
func floodEnvironment(size int) string {
	var b strings.Builder
	b.WriteByte('{')
	value := strings.Repeat("v", 72)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"LORMAS_FLOOD_VAR_%05d":"%s"`, i, value)
	}
	b.WriteByte('}')
	return b.String()
}

// TestHostileServerCannotExhaustAgentMemory is the attack of issue 7 part 4
// against the built agent and real Docker: while one container's queue is
// blocked by a long stop, the server sends 1,500 commands for it, each with
// a ~700 KB environment, as fast as the connection takes them, with pings
// and a command for another container in between. The agent's memory must
// stay bounded by bytes (peak RSS under 300 MiB with default settings),
// every command must get a result (those that do not fit: unavailable, at
// once), pings must be answered and the other container served meanwhile.
func TestHostileServerCannotExhaustAgentMemory(t *testing.T) {
	const (
		commands  = 1500
		envBytes  = 700 << 10
		pingEvery = 50
		stopGrace = 300 // seconds the blocked stop would take (the workload ignores SIGTERM); the test kills it sooner
		peakLimit = 300 << 20
	)
	if testing.Short() {
		t.Skip("the fast tier (-short) builds no binaries and needs no Docker")
	}
	cli := dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	bin := buildPlainAgent(t)
	blocked := "e2e-mem-blocked-" + randomHex(t, 4)
	other := "e2e-mem-other-" + randomHex(t, 4)
	for _, name := range []string{blocked, other} {
		removeContainer(t, cli, name)
		t.Cleanup(func() { removeContainer(t, cli, name) })
	}

	nodeID := "node-" + randomHex(t, 8)
	token := nodeToken(t, nodeID)
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	dir := t.TempDir()
	healthAddr := testsupport.FreeAddr(t)
	agent := start(t, bin, dir,
		"SERVER_URL="+srv.URL(),
		"NODE_TOKEN="+token,
		"NODE_NAME=e2e-memory",
		"STATE_DIR="+dir+"/state",
		"HEALTH_ADDR="+healthAddr,
		"LOG_LEVEL=info",
	)
	pid := agent.cmd.Process.Pid
	srv.Expect(protocol.TypeAgentIdentify)
	srv.Expect(protocol.TypeInventory)

	for _, name := range []string{blocked, other} {
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"create-%s","action":"create","containerId":%q,"eggConfig":{"image":%q,"command":["-ignore-sigterm"],"pullPolicy":"never"}}`, name, name, image))
		mustSucceed(t, srv, "create-"+name, 60*time.Second)
	}
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"start-blocked","action":"start","containerId":%q}`, blocked))
	mustSucceed(t, srv, "start-blocked", 30*time.Second)
	idle, _ := procMemory(t, pid)

	// Sample the agent's RSS until the test has its results.
	probe := sampleRSS(t, pid)

	// The stop holds the blocked container's queue for stopGrace seconds.
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"stop-blocked","action":"stop","containerId":%q,"timeout":%d}`, blocked, stopGrace))

	env := floodEnvironment(envBytes)
	began := time.Now()
	pings := 0
	for i := range commands {
		frame := fmt.Sprintf(`{"type":"command","id":"flood-%d","action":"create","containerId":%q,"eggConfig":{"image":%q,"pullPolicy":"never"},"environment":%s}`, i, blocked, image, env)
		send(t, srv, frame)
		if i%pingEvery == 0 {
			send(t, srv, `{"type":"ping"}`)
			pings++
		}
		if i == commands/2 {
			send(t, srv, fmt.Sprintf(`{"type":"command","id":"start-other","action":"start","containerId":%q}`, other))
		}
	}
	sentIn := time.Since(began)
	afterFlood, _ := procMemory(t, pid)

	// The refused commands are answered while the queue is still blocked.
	results := map[string]protocol.CommandResult{}
	collect := func() {
		for _, r := range srv.Received() {
			if res, ok := r.Msg.(protocol.CommandResult); ok && strings.HasPrefix(res.CommandID, "flood-") {
				results[res.CommandID] = res
			}
		}
	}
	mustSucceed(t, srv, "start-other", time.Minute)
	testsupport.Eventually(t, time.Minute, func() error {
		collect()
		if len(results) == 0 {
			return fmt.Errorf("no flood command answered")
		}
		last, ok := results[fmt.Sprintf("flood-%d", commands-1)]
		if !ok {
			return fmt.Errorf("the last flood command is not answered yet")
		}
		if last.Code != protocol.CodeUnavailable {
			return fmt.Errorf("the last flood command was not refused: %+v", last)
		}
		return nil
	})
	for _, r := range srv.Received() {
		if res, ok := r.Msg.(protocol.CommandResult); ok && res.CommandID == "stop-blocked" {
			t.Fatalf("the blocked stop ended before the flood was answered (%+v): the test did not hold the queue", res)
		}
	}
	// End the stop: the accepted commands then run (as conflicts: the
	// container exists with another configuration).
	if err := cli.ContainerKill(ctxT(t, 30*time.Second), blocked, "SIGKILL"); err != nil {
		t.Fatalf("kill %s: %v", blocked, err)
	}
	mustSucceed(t, srv, "stop-blocked", time.Minute)
	testsupport.Eventually(t, 3*time.Minute, func() error {
		collect()
		if len(results) < commands {
			return fmt.Errorf("%d of %d flood commands answered", len(results), commands)
		}
		return nil
	})
	testsupport.Eventually(t, 30*time.Second, func() error {
		if n := srv.Count(protocol.TypePong); n < pings {
			return fmt.Errorf("%d pongs for %d pings", n, pings)
		}
		return nil
	})
	after, peak := procMemory(t, pid)
	maxSampled, nSamples := probe.end()

	refused, ran := 0, 0
	for id, r := range results {
		switch {
		case r.Status == protocol.StatusError && r.Code == protocol.CodeUnavailable:
			refused++
			if !strings.Contains(r.Error, "retry") || !strings.Contains(r.Error, "full") {
				t.Errorf("%s refused with %q: the error must say what is full and how to retry", id, r.Error)
			}
		case r.Status == protocol.StatusError && r.Code == protocol.CodeConflict:
			ran++
		default:
			t.Errorf("%s: unexpected result %+v", id, r)
		}
	}

	// Pongs and the other container's result arrived while the blocked
	// queue was still full, before the stop ended.
	index := map[string]int{}
	firstPong := -1
	for i, r := range srv.Received() {
		if res, ok := r.Msg.(protocol.CommandResult); ok {
			if _, seen := index[res.CommandID]; !seen {
				index[res.CommandID] = i
			}
		}
		if r.Type == protocol.TypePong && firstPong < 0 {
			firstPong = i
		}
	}
	if index["start-other"] > index["stop-blocked"] {
		t.Errorf("the other container's start was answered after the blocked stop: other containers were not served meanwhile")
	}
	if firstPong < 0 || firstPong > index["stop-blocked"] {
		t.Errorf("no pong before the blocked stop ended (first pong at %d, stop result at %d)", firstPong, index["stop-blocked"])
	}

	refusedMetric := metricTotal(t, "http://"+healthAddr+"/metrics", "lormas_agent_commands_refused_total")
	t.Logf("agent RSS: idle %s, right after the flood %s, highest sampled %s (%d samples), peak VmHWM %s, after all results %s",
		rssMiB(idle), rssMiB(afterFlood), rssMiB(maxSampled), nSamples, rssMiB(peak), rssMiB(after))
	t.Logf("%d commands of %s sent in %v; %d refused as unavailable, %d accepted and run; %d pings answered; refusals metric %v",
		commands, rssMiB(int64(len(env))), sentIn.Round(time.Millisecond), refused, ran, pings, refusedMetric)

	if peak > peakLimit {
		t.Errorf("agent peak RSS %s, want under %s: pending commands are not bounded by bytes", rssMiB(peak), rssMiB(peakLimit))
	}
	if refused == 0 || refused < ran {
		t.Errorf("%d refused, %d accepted: most of the flood must be refused", refused, ran)
	}
	if int(refusedMetric) < refused {
		t.Errorf("refusals metric %v, want at least %d", refusedMetric, refused)
	}
}

// metricTotal adds up every series of the named metric at url.
func metricTotal(t testing.TB, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}
