package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// The seed document's command examples with only the image, the published
// host port and the bind's host directory replaced (the seed publishes 8080,
// which another program may hold: the test takes a free port; the seed binds
// "/data"; a bind source is one directory directly under a volume root, so
// the test binds <root>/data), and
// the id the seed's server puts on each command ("Command Message Format").
// The container id "container-uuid" is made unique per run (seedDoc): other
// test runs may share the Docker host.
const (
	seedCreateJSON = `{
  "type": "command",
  "id": "seed-create",
  "action": "create",
  "containerId": "container-uuid",
  "eggConfig": {
    "image": "%s",
    "ports": [
      {"host": %s, "container": 80}
    ],
    "volumes": [
      {"host": "%s", "container": "/app/data"}
    ]
  },
  "resources": {
    "cpu": 1.0,
    "memory": "512m",
    "disk": "10g"
  },
  "environment": {
    "ENV_VAR": "value"
  }
}`
	seedStartJSON   = `{"type": "command", "id": "seed-start", "action": "start", "containerId": "container-uuid"}`
	seedStopJSON    = `{"type": "command", "id": "seed-stop", "action": "stop", "containerId": "container-uuid"}`
	seedRestartJSON = `{"type": "command", "id": "seed-restart", "action": "restart", "containerId": "container-uuid"}`
	seedDeleteJSON  = `{"type": "command", "id": "seed-delete", "action": "delete", "containerId": "container-uuid"}`
	seedLogsJSON    = `{"type": "command", "id": "seed-logs", "action": "logs", "containerId": "container-uuid", "lines": 100}`
)

// seedDoc is a seed example for the container named id instead of
// "container-uuid".
func seedDoc(doc, id string) string {
	return strings.ReplaceAll(doc, `"container-uuid"`, strconv.Quote(id))
}

// nodeToken signs a node JWT as lormas-server does; the agent reads its
// claims without verifying them.
func nodeToken(t testing.TB, nodeID string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"nodeId": nodeID, "sub": nodeID, "name": "e2e-agent", "iat": time.Now().Unix(), "jti": randomHex(t, 8),
	}).SignedString([]byte(randomHex(t, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// resultWithin waits up to d for the command_result of id.
func resultWithin(t testing.TB, s *agenttest.Server, id string, d time.Duration) protocol.CommandResult {
	t.Helper()
	var out protocol.CommandResult
	testsupport.Eventually(t, d, func() error {
		for _, r := range s.Received() {
			if res, ok := r.Msg.(protocol.CommandResult); ok && res.CommandID == id {
				out = res
				return nil
			}
		}
		return fmt.Errorf("no command_result for %q", id)
	})
	return out
}

func mustSucceed(t testing.TB, s *agenttest.Server, id string, d time.Duration) protocol.CommandResult {
	t.Helper()
	r := resultWithin(t, s, id, d)
	if r.Status != protocol.StatusSuccess {
		t.Fatalf("command %s: %s: %s (code %s)", id, r.Status, r.Error, r.Code)
	}
	return r
}

func resultMessage(t testing.TB, r protocol.CommandResult) string {
	t.Helper()
	m, ok := r.Result.(map[string]any)
	if !ok {
		t.Fatalf("result %#v is not an object", r.Result)
	}
	s, _ := m["message"].(string)
	return s
}

// vmRSS reads the resident set size of pid in bytes.
func vmRSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func send(t testing.TB, s *agenttest.Server, frame string) {
	t.Helper()
	if err := s.SendRaw([]byte(frame)); err != nil {
		t.Fatalf("send %s: %v", frame, err)
	}
}

func inspect(t testing.TB, cli *client.Client, name string) container.InspectResponse {
	t.Helper()
	info, err := cli.ContainerInspect(ctxT(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return info
}

// TestAgentBinary drives the built lormas-agent through an in-process
// WebSocket server (agenttest.Server, built on gws) against the real Docker
// Engine: the seed's command examples, bad frames, reconnects, a result
// delivered after a disconnect, a repeated command id, and SIGTERM while a
// slow stop runs.
// cpuTicks are the host's CPU times from /proc/stat, split as the agent
// splits them (internal/hostmetrics): busy, and idle with iowait.
type cpuTicks struct{ busy, idle float64 }

func hostCPU(t testing.TB) cpuTicks {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatalf("host cpu: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		t.Fatalf("host cpu: first line of /proc/stat is %q", line)
	}
	var v [8]float64
	for i := range v {
		if v[i], err = strconv.ParseFloat(f[i+1], 64); err != nil {
			t.Fatalf("host cpu: %q: %v", line, err)
		}
	}
	// user nice system idle iowait irq softirq steal
	return cpuTicks{busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7], idle: v[3] + v[4]}
}

// busySince is the host's busy fraction since the reading before.
func (c cpuTicks) busySince(before cpuTicks) float64 {
	busy, idle := c.busy-before.busy, c.idle-before.idle
	if busy+idle <= 0 {
		return 0
	}
	return busy / (busy + idle)
}

// readBarrier returns once the agent has read every frame sent before it:
// the agent handles a connection's frames in order and answers a ping at
// once, so its pong comes after it took in (queued) what came before.
func readBarrier(t testing.TB, s *agenttest.Server) {
	t.Helper()
	if err := s.Send(protocol.Ping{}); err != nil {
		t.Fatal(err)
	}
	s.Expect(protocol.TypePong)
}

// metric reads one unlabelled value from the agent's /metrics.
func metric(t testing.TB, healthAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + healthAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s = %q: %v", name, v, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s:\n%s", name, body)
	return 0
}

func TestAgentBinary(t *testing.T) {
	cli := dockertest.Require(t)
	image := seedImage(t, cli, dockertest.WorkloadImage(t))
	seedID := "container-uuid-" + randomHex(t, 4)
	slowID := "e2e-slow-" + randomHex(t, 4)
	keepID := "e2e-keep-" + randomHex(t, 4)
	for _, name := range []string{seedID, slowID, keepID} {
		removeContainer(t, cli, name)
		t.Cleanup(func() { removeContainer(t, cli, name) })
	}

	nodeID := "node-" + randomHex(t, 8)
	token := nodeToken(t, nodeID)
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	dir := t.TempDir()
	volumeRoot := dir + "/volumes"
	healthAddr := testsupport.FreeAddr(t)
	agent := start(t, "lormas-agent", dir,
		"SERVER_URL="+srv.URL()+"/", // a trailing slash must not produce //api
		"NODE_TOKEN="+token,
		"NODE_NAME=e2e-agent",
		"STATE_DIR="+dir+"/state",
		"HEARTBEAT_INTERVAL=1s",
		"RECONNECT_DELAY=100ms",
		"RECONNECT_MAX_DELAY=500ms",
		"SHUTDOWN_TIMEOUT=20s",
		"HEALTH_ADDR="+healthAddr,
		"VOLUME_ROOTS="+volumeRoot,
	)

	t.Run("identify, inventory, pong, heartbeats", func(t *testing.T) {
		id := srv.Expect(protocol.TypeAgentIdentify).(protocol.AgentIdentify)
		if id.NodeName != "e2e-agent" || id.Version != "e2e-test" || id.ProtocolVersion != protocol.Version || id.Engine == nil || id.Engine.APIVersion == "" {
			t.Errorf("agent_identify = %+v", id)
		}
		srv.Expect(protocol.TypeInventory)
		up := srv.Upgrades()[0]
		if got := up.Header.Get("Authorization"); got != "Bearer "+token {
			t.Errorf("Authorization header %q, want the bearer token", got)
		}
		if ua := up.Header.Get("User-Agent"); ua != "Lormas-Node-Agent/e2e-test" {
			t.Errorf("User-Agent %q", ua)
		}
		if err := srv.Send(protocol.Ping{}); err != nil {
			t.Fatal(err)
		}
		srv.Expect(protocol.TypePong)

		cpus := map[float64]bool{}
		hostBefore := hostCPU(t)
		for i := 0; i < 6 && len(cpus) < 2; i++ {
			hb := srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
			if hb.NodeID != nodeID {
				t.Errorf("heartbeat nodeId %q, want %q from the token's claims", hb.NodeID, nodeID)
			}
			if hb.Resources.CPU < 0 || hb.Resources.CPU > 1 || !strings.HasSuffix(hb.Resources.Memory, "MB") || hb.Resources.MemoryTotalBytes == 0 {
				t.Errorf("heartbeat resources %+v not plausible", hb.Resources)
			}
			if _, err := time.Parse(time.RFC3339, hb.Timestamp); err != nil {
				t.Errorf("heartbeat timestamp %q: %v", hb.Timestamp, err)
			}
			cpus[hb.Resources.CPU] = true
		}
		// Real values vary from beat to beat, unless the host was saturated
		// (or idle) throughout, as the test's own reading of /proc/stat over
		// the same seconds shows: a constant figure must be that one.
		if busy := hostCPU(t).busySince(hostBefore); len(cpus) < 2 {
			for c := range cpus {
				if math.Abs(c-busy) > 0.1 {
					t.Errorf("heartbeat cpu %v constant across 6 beats, while the host was %.3f busy over them", c, busy)
				}
			}
			t.Logf("heartbeat cpu constant at %v across 6 beats: the host was %.3f busy over them", cpus, busy)
		}
	})

	t.Run("seed create/start/logs/stop/restart/delete", func(t *testing.T) {
		hostPort := testsupport.FreePort(t)
		send(t, srv, seedDoc(fmt.Sprintf(seedCreateJSON, image, hostPort, volumeRoot+"/data"), seedID))
		r := mustSucceed(t, srv, "seed-create", 60*time.Second)
		info := inspect(t, cli, seedID)
		if got := r.Result.(map[string]any)["containerId"]; got != info.ID {
			t.Errorf("create result containerId %v, want %s", got, info.ID)
		}
		if info.HostConfig.NanoCPUs != 1e9 || info.HostConfig.Memory != 536870912 || info.HostConfig.MemorySwap != 536870912 {
			t.Errorf("limits NanoCPUs=%d Memory=%d MemorySwap=%d", info.HostConfig.NanoCPUs, info.HostConfig.Memory, info.HostConfig.MemorySwap)
		}
		if b := info.HostConfig.PortBindings["80/tcp"]; len(b) != 1 || b[0].HostPort != hostPort {
			t.Errorf("port bindings %v", info.HostConfig.PortBindings)
		}
		if !slices.Contains(info.Config.Env, "ENV_VAR=value") {
			t.Errorf("env %v lacks ENV_VAR=value", info.Config.Env)
		}
		if len(info.Mounts) != 1 || info.Mounts[0].Source != volumeRoot+"/data" || info.Mounts[0].Destination != "/app/data" {
			t.Errorf("mounts %+v", info.Mounts)
		}
		if len(r.Warnings) == 0 {
			t.Errorf("create with disk 10g on %s: no warning in %+v", "this storage driver", r)
		}

		send(t, srv, seedDoc(seedStartJSON, seedID))
		if msg := resultMessage(t, mustSucceed(t, srv, "seed-start", 30*time.Second)); msg != protocol.MsgStarted {
			t.Errorf("start message %q", msg)
		}
		testsupport.Eventually(t, 10*time.Second, func() error {
			resp, err := http.Get("http://127.0.0.1:" + hostPort + "/")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				return fmt.Errorf("published port %s: %d %s", hostPort, resp.StatusCode, body)
			}
			return nil
		})
		send(t, srv, seedDoc(seedLogsJSON, seedID))
		logs := mustSucceed(t, srv, "seed-logs", 30*time.Second).Result.(map[string]any)["logs"].([]any)
		var lines []string
		for _, l := range logs {
			lines = append(lines, l.(string))
		}
		for _, want := range []string{"stdout line 1", "stdout line 3", "stderr line 2"} {
			if !slices.Contains(lines, want) {
				t.Errorf("logs %q lack %q", lines, want)
			}
		}
		for _, l := range lines {
			if l == "" || strings.ContainsAny(l, "\r\x00\x01\x02") {
				t.Errorf("log line %q has an empty line, \\r or a stream header", l)
			}
		}
		send(t, srv, seedDoc(seedStopJSON, seedID))
		if msg := resultMessage(t, mustSucceed(t, srv, "seed-stop", 30*time.Second)); msg != protocol.MsgStopped {
			t.Errorf("stop message %q", msg)
		}
		send(t, srv, seedDoc(seedRestartJSON, seedID))
		if msg := resultMessage(t, mustSucceed(t, srv, "seed-restart", 30*time.Second)); msg != protocol.MsgRestarted {
			t.Errorf("restart message %q", msg)
		}
		if !inspect(t, cli, seedID).State.Running {
			t.Error("container not running after restart")
		}
		send(t, srv, seedDoc(seedDeleteJSON, seedID))
		if msg := resultMessage(t, mustSucceed(t, srv, "seed-delete", 30*time.Second)); msg != protocol.MsgDeleted {
			t.Errorf("delete message %q", msg)
		}
		if _, err := cli.ContainerInspect(ctxT(t, 10*time.Second), seedID); !cerrdefs.IsNotFound(err) {
			t.Errorf("container still there after delete: %v", err)
		}
	})

	t.Run("unknown action, malformed and binary frames", func(t *testing.T) {
		send(t, srv, `{"type":"command","id":"bad-action","action":"explode","containerId":"x"}`)
		if r := resultWithin(t, srv, "bad-action", 10*time.Second); r.Status != protocol.StatusError || r.Code != protocol.CodeInvalid || !strings.Contains(r.Error, "explode") {
			t.Errorf("unknown action result %+v", r)
		}
		send(t, srv, `{"type":"command",`)
		if err := srv.SendBinary([]byte{0x00, 0xff, 0x10}); err != nil {
			t.Fatal(err)
		}
		send(t, srv, `{"type":"command","id":"bad-type","action":"start","containerId":5}`)
		if r := resultWithin(t, srv, "bad-type", 10*time.Second); r.Code != protocol.CodeInvalid {
			t.Errorf("wrong field type result %+v, want invalid", r)
		}
		send(t, srv, `{"type":"command","id":"bad-name","action":"start","containerId":"../../etc"}`)
		if r := resultWithin(t, srv, "bad-name", 10*time.Second); r.Code != protocol.CodeInvalid {
			t.Errorf("containerId ../../etc result %+v, want invalid", r)
		}
		send(t, srv, `{"type":"command","action":"list"}`)
		testsupport.Eventually(t, 10*time.Second, func() error {
			for _, r := range srv.Received() {
				res, ok := r.Msg.(protocol.CommandResult)
				if !ok || res.Status != protocol.StatusSuccess || res.CommandID == "" {
					continue
				}
				if m, ok := res.Result.(map[string]any); ok && m["containers"] != nil {
					return nil // only the id-less list command has this result so far
				}
			}
			return fmt.Errorf("no result with a generated id for a command without id")
		})
		// Still the same connection, still answering.
		if err := srv.Send(protocol.Ping{}); err != nil {
			t.Fatal(err)
		}
		srv.Expect(protocol.TypePong)
		if n := srv.Connections(); n != 1 {
			t.Errorf("bad frames caused reconnects: %d connections", n)
		}
	})

	t.Run("server close then reconnect", func(t *testing.T) {
		srv.CloseConns(1001, "server restarting")
		if err := srv.WaitConnections(ctxT(t, 15*time.Second), 2); err != nil {
			t.Fatal(err)
		}
		srv.Expect(protocol.TypeAgentIdentify)
		srv.Expect(protocol.TypeInventory)
	})

	// The slow container ignores SIGTERM, so stop takes its whole grace period.
	for _, name := range []string{slowID, keepID} {
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"create-%s","action":"create","containerId":%q,"eggConfig":{"image":%q,"command":["-ignore-sigterm"],"pullPolicy":"never"}}`, name, name, image))
		mustSucceed(t, srv, "create-"+name, 30*time.Second)
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"start-%s","action":"start","containerId":%q}`, name, name))
		mustSucceed(t, srv, "start-"+name, 30*time.Second)
	}

	t.Run("result produced during a disconnect is delivered after reconnect", func(t *testing.T) {
		conns := srv.Connections()
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"stop-offline","action":"stop","containerId":%q,"timeout":2}`, slowID))
		readBarrier(t, srv) // the agent has taken the stop
		srv.Refuse(http.StatusServiceUnavailable)
		srv.DropConns()
		// The stop finishes (2 s grace) while every dial is refused, and
		// its result waits in the outbox.
		testsupport.Eventually(t, 20*time.Second, func() error {
			if inspect(t, cli, slowID).State.Running {
				return fmt.Errorf("still running")
			}
			if depth := metric(t, healthAddr, "lormas_agent_outbox_depth"); depth < 1 {
				return fmt.Errorf("outbox depth %v: the result is not queued yet", depth)
			}
			return nil
		})
		srv.Refuse(0)
		if err := srv.WaitConnections(ctxT(t, 15*time.Second), conns+1); err != nil {
			t.Fatal(err)
		}
		r := mustSucceed(t, srv, "stop-offline", 15*time.Second)
		if resultMessage(t, r) != protocol.MsgStopped {
			t.Errorf("queued result %+v", r)
		}
		// Delivered on the new connection, after identify.
		var order []string
		for _, rec := range srv.Received() {
			if rec.Conn == conns+1 {
				order = append(order, rec.Type)
			}
		}
		if len(order) < 3 || order[0] != protocol.TypeAgentIdentify || order[1] != protocol.TypeInventory {
			t.Errorf("new connection's first frames %v, want agent_identify, inventory, then the queued result", order)
		}
	})

	t.Run("repeated command id is answered from the stored result", func(t *testing.T) {
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"dup-start","action":"start","containerId":%q}`, slowID))
		mustSucceed(t, srv, "dup-start", 30*time.Second)
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"dup-stop","action":"stop","containerId":%q,"timeout":1}`, slowID))
		mustSucceed(t, srv, "dup-stop", 30*time.Second)
		before := srv.Count(protocol.TypeCommandResult)
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"dup-start","action":"start","containerId":%q}`, slowID))
		testsupport.Eventually(t, 10*time.Second, func() error {
			if srv.Count(protocol.TypeCommandResult) == before {
				return fmt.Errorf("no replayed result")
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond)
		if inspect(t, cli, slowID).State.Running {
			t.Error("the repeated start ran again: the container is running")
		}
	})

	t.Run("health endpoint", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get("http://" + healthAddr + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET %s = %d %s", path, resp.StatusCode, body)
			}
			if path == "/metrics" && !strings.Contains(string(body), "lormas_agent_commands_total") {
				t.Errorf("/metrics lacks lormas_agent_commands_total")
			}
		}
	})

	t.Run("log flood to a slow server", func(t *testing.T) {
		// 100000 lines stay inside one json-file log file (CONTAINER_LOG_MAX_SIZE 10m):
		// Docker's follow reader can lose lines when it falls more than one
		// rotation behind, which no agent can see or count. They also fit the
		// stream's buffer (LOG_STREAM_BUFFER 8 MiB): none is dropped.
		const total = 100000
		flood := "e2e-flood-" + randomHex(t, 4)
		t.Cleanup(func() { removeContainer(t, cli, flood) })
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"create-flood","action":"create","containerId":%q,"eggConfig":{"image":%q,"command":["-flood","-lines","%d","-delay","1s"],"tty":false,"pullPolicy":"never"}}`, flood, image, total))
		mustSucceed(t, srv, "create-flood", 30*time.Second)
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"start-flood","action":"start","containerId":%q}`, flood))
		mustSucceed(t, srv, "start-flood", 30*time.Second)
		// The server reads one frame every 50 ms: far slower than the container writes.
		srv.SetReadDelay(50 * time.Millisecond)
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"follow-flood","action":"logs","containerId":%q,"follow":true}`, flood))
		time.Sleep(4 * time.Second)
		rss := vmRSS(t, agent.cmd.Process.Pid)
		t.Logf("agent RSS while the slow server lags behind a flood of %d lines: %.1f MiB", total, float64(rss)/(1<<20))
		if rss > 150<<20 {
			t.Errorf("agent RSS %d MiB while the server is slow: the stream's buffer is not bounded", rss>>20)
		}
		srv.SetReadDelay(0)
		got := 0
		testsupport.Eventually(t, 60*time.Second, func() error {
			got = 0
			next := 1
			for _, r := range srv.Received() {
				m, ok := r.Msg.(protocol.LogMessage)
				if !ok || m.CommandID != "follow-flood" {
					continue
				}
				lines := m.Lines
				if m.Line != "" {
					lines = []string{m.Line}
				}
				for _, l := range lines {
					if want := fmt.Sprintf("flood line %d", next); l != want {
						return fmt.Errorf("line %d of the stream is %q, want %q (lost or reordered)", got+1, l, want)
					}
					next++
					got++
				}
			}
			if got < total {
				return fmt.Errorf("%d of %d lines received", got, total)
			}
			return nil
		})
		if err := srv.Send(protocol.Cancel{CommandID: "follow-flood"}); err != nil {
			t.Fatal(err)
		}
		r := mustSucceed(t, srv, "follow-flood", 15*time.Second)
		if m, _ := r.Result.(map[string]any); m["dropped"] != nil {
			t.Errorf("final result reports dropped lines: %+v", r)
		}
		t.Logf("%d lines streamed in order, none lost", got)
	})

	t.Run("SIGTERM while a slow stop runs", func(t *testing.T) {
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"restart-slow","action":"start","containerId":%q}`, slowID))
		mustSucceed(t, srv, "restart-slow", 30*time.Second)
		send(t, srv, fmt.Sprintf(`{"type":"command","id":"stop-at-sigterm","action":"stop","containerId":%q,"timeout":4}`, slowID))
		readBarrier(t, srv) // the stop is in flight: SIGTERM waits for it
		begin := time.Now()
		if code := agent.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0", code)
		}
		r := mustSucceed(t, srv, "stop-at-sigterm", time.Second)
		if resultMessage(t, r) != protocol.MsgStopped {
			t.Errorf("in-flight stop result %+v", r)
		}
		t.Logf("agent exited %v after SIGTERM with the in-flight stop flushed", time.Since(begin).Round(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl, err := srv.NextClose(ctx)
		for err == nil && cl.Code != 1001 {
			cl, err = srv.NextClose(ctx)
		}
		if err != nil {
			t.Errorf("no close frame with 1001 from the agent: %v", err)
		}
		if !inspect(t, cli, keepID).State.Running {
			t.Error("a managed container stopped when the agent exited")
		}
	})

	if strings.Contains(agent.out.String(), token) {
		t.Error("the node token appears in the agent's output")
	}
}
