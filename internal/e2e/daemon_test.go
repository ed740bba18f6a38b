package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestDockerDaemonRestart: the Docker daemon goes away while the agent runs
// and comes back. Commands meanwhile fail fast with "unavailable", readiness
// fails, the connection to the server stays up, and everything works again
// once the daemon is back, including the events stream.
func TestDockerDaemonRestart(t *testing.T) {
	dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	cli := dockertest.Require(t)
	// Between the agent and the real Docker socket, so the daemon can
	// "stop" and "restart" as the agent sees it (closing the socket and
	// every connection, as a daemon exit does) without touching the
	// machine's daemon.
	proxy, err := dockertest.NewSocketProxy(filepath.Join(t.TempDir(), "docker.sock"), "/var/run/docker.sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)

	token := nodeToken(t, "node-"+randomHex(t, 6))
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	dir := t.TempDir()
	healthAddr := testsupport.FreeAddr(t)
	start(t, "lormas-agent", dir,
		"SERVER_URL="+srv.URL(), "NODE_TOKEN="+token, "NODE_NAME=e2e-daemon", "STATE_DIR="+dir+"/state",
		"HEALTH_ADDR="+healthAddr, "DOCKER_HOST=unix://"+proxy.Path, "DOCKER_TIMEOUT=5s",
		"HEARTBEAT_INTERVAL=1s", "RECONNECT_DELAY=100ms", "RECONNECT_MAX_DELAY=500ms",
	)
	srv.Expect(protocol.TypeAgentIdentify)
	name := "e2e-daemon-" + randomHex(t, 4)
	t.Cleanup(func() { removeContainer(t, cli, name) })
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"create-1","action":"create","containerId":%q,"eggConfig":{"image":%q,"pullPolicy":"never"}}`, name, image))
	mustSucceed(t, srv, "create-1", 30*time.Second)

	ready := func() int {
		resp, err := http.Get("http://" + healthAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testsupport.Eventually(t, 10*time.Second, func() error {
		if c := ready(); c != 200 {
			return fmt.Errorf("/readyz = %d before the daemon stops", c)
		}
		return nil
	})

	proxy.Cut()
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"start-down","action":"start","containerId":%q}`, name))
	r := resultWithin(t, srv, "start-down", 30*time.Second)
	if r.Status != protocol.StatusError || r.Code != protocol.CodeUnavailable {
		t.Errorf("start while the daemon is down: %+v, want an unavailable error", r)
	}
	t.Logf("while Docker is down: %s (code %s)", r.Error, r.Code)
	testsupport.Eventually(t, 15*time.Second, func() error {
		if c := ready(); c == 200 {
			return errors.New("/readyz still 200 with the daemon down")
		}
		return nil
	})
	conns := srv.Connections()
	if err := srv.Send(protocol.Ping{}); err != nil {
		t.Fatal(err)
	}
	srv.Expect(protocol.TypePong)

	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 15*time.Second, func() error {
		if c := ready(); c != 200 {
			return fmt.Errorf("/readyz = %d after the daemon came back", c)
		}
		return nil
	})
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"start-up","action":"start","containerId":%q}`, name))
	mustSucceed(t, srv, "start-up", 30*time.Second)
	// The events stream was resubscribed: the start shows up as a container_event.
	testsupport.Eventually(t, 30*time.Second, func() error {
		for _, rec := range srv.Received() {
			if ev, ok := rec.Msg.(protocol.ContainerEvent); ok && ev.ContainerID == name && strings.HasPrefix(ev.Action, "start") {
				return nil
			}
		}
		return fmt.Errorf("no container_event start for %s after the daemon came back", name)
	})
	if srv.Connections() != conns {
		t.Errorf("the server connection was redialled (%d -> %d) because Docker went away", conns, srv.Connections())
	}
}
