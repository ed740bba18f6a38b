package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// removeContainer force-removes a test container, ignoring "not found".
func removeContainer(t testing.TB, cli *client.Client, name string) {
	_ = cli.ContainerRemove(ctxT(t, 30*time.Second), name, container.RemoveOptions{Force: true})
}

// startServer runs lormas-server on addr with dataDir and waits until it answers.
func startServer(t *testing.T, addr, dataDir string, env ...string) (*proc, *api) {
	t.Helper()
	// Every client here is 127.0.0.1: a large failure budget unless a test
	// sets AUTH_FAILURE_BURST itself (the later value wins).
	base := []string{"LISTEN_ADDR=" + addr, "DATA_DIR=" + dataDir, "AUTH_FAILURE_BURST=100000"}
	srv := start(t, "lormas-server", dataDir, append(base, env...)...)
	a := &api{t: t, base: "http://" + addr}
	testsupport.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(a.base + "/api/nodes")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("GET /api/nodes without a token = %d, want 401", resp.StatusCode)
		}
		return nil
	})
	return srv, a
}

// agentEnv is the environment shared by the agents of these tests.
func agentEnv(serverAddr, name, stateDir string) []string {
	return []string{
		"SERVER_URL=ws://" + serverAddr,
		"NODE_NAME=" + name,
		"STATE_DIR=" + stateDir,
		"HEALTH_ADDR=",
		"HEARTBEAT_INTERVAL=1s",
		"RECONNECT_DELAY=100ms",
		"RECONNECT_MAX_DELAY=1s",
		"SHUTDOWN_TIMEOUT=10s",
	}
}

// TestSystem runs lormas-server and lormas-agent as processes and drives a
// container through the server's REST API against the real Docker Engine,
// then rotates the node token, enrolls a second agent and restarts the server.
func TestSystem(t *testing.T) {
	cli := dockertest.Require(t)
	image := dockertest.WorkloadImage(t)

	dataDir := t.TempDir()
	addr := testsupport.FreeAddr(t)
	adminToken := "admin-" + randomHex(t, 16)
	enrollToken := "enroll-" + randomHex(t, 16)
	srv, a := startServer(t, addr, dataDir, "ADMIN_TOKEN="+adminToken, "ENROLLMENT_TOKEN="+enrollToken)
	a.token = adminToken

	// Register a node, as the seed's curl example does.
	node := a.createNode("e2e-node-1")
	agentDir := t.TempDir()
	tokenFile := filepath.Join(agentDir, "node-token")
	if err := os.WriteFile(tokenFile, []byte(node.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agent1 := start(t, "lormas-agent", agentDir, append(agentEnv(addr, "e2e-node-1", filepath.Join(agentDir, "state")), "NODE_TOKEN_FILE="+tokenFile)...)
	a.waitConnected(node.ID, true, 30*time.Second)

	testsupport.Eventually(t, 15*time.Second, func() error {
		n := a.node(node.ID)
		if n.LastHeartbeat == "" || len(n.Resources) == 0 || n.AgentVersion == "" {
			return fmt.Errorf("node %+v: no heartbeat or agent version yet", n)
		}
		return nil
	})

	cid := "e2e-sys-" + randomHex(t, 4)
	t.Cleanup(func() { removeContainer(t, cli, cid) })

	t.Run("container cycle through the REST API", func(t *testing.T) {
		a := &api{t: t, base: a.base, token: a.token}
		r := a.mustSucceed(node.ID, map[string]any{
			"action":      "create",
			"containerId": cid,
			"eggConfig": map[string]any{
				"image":      image,
				"command":    []string{"-lines", "3", "-stderr-lines", "2"},
				"tty":        false,
				"pullPolicy": "never",
			},
			"resources":   map[string]any{"cpu": 0.5, "memory": "64m"},
			"environment": map[string]string{"GREETING": "hello"},
		})
		created := resultField[struct{ ContainerID string }](t, r)
		info, err := cli.ContainerInspect(ctxT(t, 10*time.Second), cid)
		if err != nil {
			t.Fatalf("inspect after create: %v", err)
		}
		if created.ContainerID != info.ID {
			t.Errorf("create result containerId %q, want Docker id %q", created.ContainerID, info.ID)
		}
		if info.Config.Labels["lormas.managed"] != "true" || info.Config.Labels["lormas.container"] != cid {
			t.Errorf("labels %v lack lormas.managed/lormas.container", info.Config.Labels)
		}
		if info.HostConfig.NanoCPUs != 5e8 || info.HostConfig.Memory != 64<<20 {
			t.Errorf("NanoCPUs %d Memory %d, want 5e8 and %d", info.HostConfig.NanoCPUs, info.HostConfig.Memory, 64<<20)
		}

		r = a.mustSucceed(node.ID, map[string]any{"action": "start", "containerId": cid})
		if msg := resultField[struct{ Message string }](t, r).Message; msg != "Container started" {
			t.Errorf("start message %q", msg)
		}
		var logs []string
		testsupport.Eventually(t, 15*time.Second, func() error {
			r := a.mustSucceed(node.ID, map[string]any{"action": "logs", "containerId": cid, "lines": 100})
			logs = resultField[struct{ Logs []string }](t, r).Logs
			if len(logs) < 5 {
				return fmt.Errorf("logs %q: want 5 lines", logs)
			}
			return nil
		})
		for _, want := range []string{"stdout line 1", "stdout line 3", "stderr line 2"} {
			if !slices.Contains(logs, want) {
				t.Errorf("logs %q lack %q", logs, want)
			}
		}
		r = a.mustSucceed(node.ID, map[string]any{"action": "stop", "containerId": cid, "timeout": 2})
		if msg := resultField[struct{ Message string }](t, r).Message; msg != "Container stopped" {
			t.Errorf("stop message %q", msg)
		}
		r = a.mustSucceed(node.ID, map[string]any{"action": "restart", "containerId": cid, "timeout": 2})
		if msg := resultField[struct{ Message string }](t, r).Message; msg != "Container restarted" {
			t.Errorf("restart message %q", msg)
		}
		if info, err := cli.ContainerInspect(ctxT(t, 10*time.Second), cid); err != nil || !info.State.Running {
			t.Errorf("after restart: running=%v err=%v", info.State != nil && info.State.Running, err)
		}
		r = a.mustSucceed(node.ID, map[string]any{"action": "delete", "containerId": cid})
		if msg := resultField[struct{ Message string }](t, r).Message; msg != "Container deleted" {
			t.Errorf("delete message %q", msg)
		}
		if _, err := cli.ContainerInspect(ctxT(t, 10*time.Second), cid); !cerrdefs.IsNotFound(err) {
			t.Errorf("inspect after delete: %v, want not found", err)
		}
		// Errors come back as results with a code, through the same endpoint.
		r = a.command(node.ID, map[string]any{"action": "start", "containerId": cid})
		if r.Status != "error" || r.Code != "not_found" || !strings.Contains(r.Error, cid) {
			t.Errorf("start of a deleted container: %+v, want a not_found error naming it", r)
		}
		// Invalid commands are refused by the server before they are sent.
		if code := a.do("POST", "/api/nodes/"+node.ID+"/commands", a.token, map[string]any{"action": "start", "containerId": "../etc"}, nil); code != http.StatusBadRequest {
			t.Errorf("invalid command: status %d, want 400", code)
		}
	})

	t.Run("token rotation", func(t *testing.T) {
		a := &api{t: t, base: a.base, token: a.token}
		var rotated struct{ ID, Token string }
		if code := a.do("PATCH", "/api/nodes/"+node.ID+"/token", a.token, nil, &rotated); code != http.StatusOK {
			t.Fatalf("PATCH token = %d", code)
		}
		if rotated.Token == "" || rotated.Token == node.Token {
			t.Fatalf("rotation returned token %q, want a new one", rotated.Token)
		}
		// The live session with the old token is closed and the old token refused.
		a.waitConnected(node.ID, false, 15*time.Second)
		agent1.waitOutput("server rejected the node token", 15*time.Second)
		req, _ := http.NewRequest("GET", a.base+"/api/ws/nodes?token="+node.Token, nil)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("upgrade with the old token: %v %v, want 401", resp.StatusCode, err)
		}
		// The agent re-reads NODE_TOKEN_FILE before every dial: no restart needed.
		if err := os.WriteFile(tokenFile, []byte(rotated.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		a.waitConnected(node.ID, true, 30*time.Second)
		a.mustSucceed(node.ID, map[string]any{"action": "list"})
		node.Token = rotated.Token
	})

	var node2 apiNode
	var agent2 *proc
	outer := t // the enrolled agent must outlive the subtest: it reconnects after the server restart
	dir2 := outer.TempDir()
	state2 := filepath.Join(dir2, "state")
	env2 := append(agentEnv(addr, "e2e-node-2", state2), "ENROLLMENT_TOKEN="+enrollToken)
	t.Run("enrollment", func(t *testing.T) {
		a := &api{t: t, base: a.base, token: a.token}
		state := state2
		agent2 = start(outer, "lormas-agent", dir2, env2...)
		testsupport.Eventually(t, 30*time.Second, func() error {
			var nodes []apiNode
			a.do("GET", "/api/nodes", a.token, nil, &nodes)
			for _, n := range nodes {
				if n.Name == "e2e-node-2" && n.Connected {
					node2 = n
					return nil
				}
			}
			return fmt.Errorf("e2e-node-2 not enrolled and connected yet: %+v", nodes)
		})
		st, err := os.Stat(filepath.Join(state, "node-token"))
		if err != nil {
			t.Fatalf("enrolled token not stored: %v", err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("stored token mode %v, want 0600", st.Mode().Perm())
		}
		a.mustSucceed(node2.ID, map[string]any{"action": "list"})
		// A wrong enrollment token is refused.
		if code := a.do("POST", "/api/nodes/enroll", "wrong-"+enrollToken, map[string]string{"name": "intruder"}, nil); code != http.StatusUnauthorized {
			t.Errorf("enroll with a wrong token = %d, want 401", code)
		}
	})

	// What an administrator does to an enrolled node sticks (issue 7): the
	// agent used to enroll again on 4001/4003 and came back within a second.
	t.Run("a rotated enrolled node stays out until the operator writes its token", func(t *testing.T) {
		a := &api{t: t, base: a.base, token: a.token}
		if node2.ID == "" {
			t.Fatal("no enrolled node: the enrollment subtest failed")
		}
		var rotated struct{ ID, Token string }
		if code := a.do("PATCH", "/api/nodes/"+node2.ID+"/token", a.token, nil, &rotated); code != http.StatusOK {
			t.Fatalf("PATCH token = %d", code)
		}
		a.waitConnected(node2.ID, false, 15*time.Second)
		agent2.waitOutput("an administrator rotated this node's token", 15*time.Second)
		stayOut(t, a, "e2e-node-2", node2.ID, 5*time.Second)
		if strings.Contains(agent2.out.String(), "renewing the token") {
			t.Errorf("the agent tried to renew a rotated token")
		}
		// The operator gives the agent the node's new token: it is back
		// without a restart, as the same node.
		if err := os.WriteFile(filepath.Join(state2, "node-token"), []byte(rotated.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		a.waitConnected(node2.ID, true, 30*time.Second)
		a.mustSucceed(node2.ID, map[string]any{"action": "list"})
	})

	t.Run("a deleted enrolled node stays out", func(t *testing.T) {
		a := &api{t: t, base: a.base, token: a.token}
		if code := a.do("DELETE", "/api/nodes/"+node2.ID, a.token, nil, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE node = %d, want 204", code)
		}
		agent2.waitOutput("an administrator deleted this node", 15*time.Second)
		stayOut(t, a, "e2e-node-2", "", 5*time.Second)
		// To enroll the machine as a NEW node the operator removes its
		// token and key and restarts the agent.
		if code := agent2.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
			t.Fatalf("agent exit code %d after SIGTERM", code)
		}
		for _, f := range []string{"node-token", "node-key"} {
			if err := os.Remove(filepath.Join(state2, f)); err != nil {
				t.Fatal(err)
			}
		}
		agent2 = start(outer, "lormas-agent", dir2, env2...)
		old := node2.ID
		testsupport.Eventually(t, 30*time.Second, func() error {
			var nodes []apiNode
			a.do("GET", "/api/nodes", a.token, nil, &nodes)
			for _, n := range nodes {
				if n.Name == "e2e-node-2" && n.Connected && n.ID != old {
					node2 = n
					return nil
				}
			}
			return fmt.Errorf("e2e-node-2 not enrolled anew: %+v", nodes)
		})
		a.mustSucceed(node2.ID, map[string]any{"action": "list"})
	})

	t.Run("server killed mid-command", func(t *testing.T) {
		a := &api{t: t, base: a.base, token: a.token}
		slow := "e2e-sys-slow-" + randomHex(t, 4)
		outer.Cleanup(func() { removeContainer(outer, cli, slow) })
		a.mustSucceed(node.ID, map[string]any{"action": "create", "containerId": slow,
			"eggConfig": map[string]any{"image": image, "command": []string{"-ignore-sigterm"}, "pullPolicy": "never"}})
		a.mustSucceed(node.ID, map[string]any{"action": "start", "containerId": slow})
		stop := map[string]any{"id": "stop-" + slow, "action": "stop", "containerId": slow, "timeout": 3}
		go func() { // its HTTP request dies with the server
			req, _ := http.NewRequest("POST", a.base+"/api/nodes/"+node.ID+"/commands", strings.NewReader(fmt.Sprintf(`{"id":%q,"action":"stop","containerId":%q,"timeout":3}`, stop["id"], slow)))
			req.Header.Set("Authorization", "Bearer "+a.token)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		testsupport.Eventually(t, 10*time.Second, func() error {
			if !strings.Contains(agent1.out.String(), stop["id"].(string)) {
				return fmt.Errorf("the agent has not received the stop yet")
			}
			return nil
		})
		srv.kill()
		var a2 *api
		srv, a2 = startServer(outer, addr, dataDir, "ADMIN_TOKEN="+adminToken, "ENROLLMENT_TOKEN="+enrollToken)
		a2.token = adminToken
		a2.waitConnected(node.ID, true, 30*time.Second)
		// Asking again with the same id collects the result the agent kept:
		// the stop is not run a second time.
		r := a2.mustSucceed(node.ID, stop)
		if msg := resultField[struct{ Message string }](t, r).Message; msg != "Container stopped" {
			t.Errorf("result after the server was killed: %+v", r)
		}
		if info, err := cli.ContainerInspect(ctxT(t, 10*time.Second), slow); err != nil || info.State.Running {
			t.Errorf("slow container after the stop: running=%v err=%v", err == nil && info.State.Running, err)
		}
	})

	t.Run("server restart keeps nodes and tokens", func(t *testing.T) {
		if code := srv.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
			t.Fatalf("server exit code %d after SIGTERM, want 0", code)
		}
		// Secrets and nodes come from DATA_DIR now: start without ADMIN_TOKEN only if it was
		// persisted; the test passes it again as an operator would from the same .env.
		_, a2 := startServer(outer, addr, dataDir, "ADMIN_TOKEN="+adminToken, "ENROLLMENT_TOKEN="+enrollToken)
		a2.token = adminToken
		for _, id := range []string{node.ID, node2.ID} {
			if id == "" {
				continue
			}
			n := a2.node(id)
			if n.ID != id {
				t.Errorf("node %s lost across restart: %+v", id, n)
			}
			// Both agents reconnect by themselves with their stored tokens.
			a2.waitConnected(id, true, 30*time.Second)
			a2.mustSucceed(id, map[string]any{"action": "list"})
		}
	})

	for _, p := range []*proc{agent1} {
		if strings.Contains(p.out.String(), node.Token) {
			t.Errorf("agent output contains the node token")
		}
	}
}

// stayOut checks for d that the node named name does not come back: no
// connected node of that name (with id, when given, the node may exist but
// stays disconnected; without, no node of that name exists at all).
func stayOut(t *testing.T, a *api, name, id string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var nodes []apiNode
		a.do("GET", "/api/nodes", a.token, nil, &nodes)
		for _, n := range nodes {
			if n.Name != name {
				continue
			}
			if id == "" || n.ID != id || n.Connected {
				t.Fatalf("node %q came back: %+v", name, n)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}
