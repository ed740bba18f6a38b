package main

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// hungDaemon serves a Docker Engine API on a unix socket as a daemon stuck
// in a libnetwork deadlock does: /_ping and /version answer (docker ps and
// docker version work), everything else, Info first, hangs until the
// client gives up. It counts the Info requests the client gave up on.
func hungDaemon(t *testing.T) (host string, infoAbandoned *atomic.Int64) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var abandoned atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/_ping":
			_, _ = w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/version"):
			_, _ = w.Write([]byte(`{"Version":"20.10.24","ApiVersion":"1.41"}`))
		default:
			<-r.Context().Done()
			if strings.HasSuffix(r.URL.Path, "/info") {
				abandoned.Add(1)
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock, &abandoned
}

// TestHungDockerDoesNotHoldUpIdentify: with a Docker daemon whose Info
// never returns, the agent asked it for its data root (to check the volume
// roots, then for heartbeats' disk usage) before connecting, and identified
// only once both calls had timed out. It identifies while the daemon's Info
// is still pending, and a command is answered with an error instead of
// hanging.
func TestHungDockerDoesNotHoldUpIdentify(t *testing.T) {
	t.Chdir(t.TempDir())
	host, infoAbandoned := hungDaemon(t)
	srv := agenttest.NewServer(t, agenttest.ServerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, nil, []string{"SERVER_URL=" + srv.URL(), "NODE_TOKEN=static-token", "STATE_DIR=" + t.TempDir(),
			"DOCKER_HOST=" + host, "DOCKER_TIMEOUT=5s",
			"HEALTH_ADDR=", "LOG_LEVEL=debug", "LOG_FORMAT=json"}, &stdout, &stderr)
	}()
	id := srv.Expect(protocol.TypeAgentIdentify).(protocol.AgentIdentify)
	// Every Info the agent has sent is still pending: nothing waited on it.
	if n := infoAbandoned.Load(); n != 0 {
		t.Errorf("agent_identify came after the agent gave up on %d Info calls to the hung daemon", n)
	}
	if id.Engine == nil || id.Engine.Version != "20.10.24" {
		t.Errorf("identify engine %+v, want the daemon's version", id.Engine)
	}

	if err := srv.Send(protocol.Command{ID: "c1", Action: protocol.ActionStart, ContainerID: "web-1"}); err != nil {
		t.Fatal(err)
	}
	res := srv.ExpectResult("c1")
	if res.Status != protocol.StatusError || (res.Code != protocol.CodeTimeout && res.Code != protocol.CodeUnavailable) {
		t.Errorf("result %+v, want a timeout or unavailable error", res)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d\n%s", code, stderr.String())
	}
}
