package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// socketProxy stands between the agent and the real Docker socket, so a test
// can "stop" and "restart" the daemon as the agent sees it without touching
// the machine's daemon: stop closes the listener and every connection (as a
// daemon exit does), start listens again on the same path.
type socketProxy struct {
	t      testing.TB
	path   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newSocketProxy(t testing.TB, target string) *socketProxy {
	p := &socketProxy{t: t, path: filepath.Join(t.TempDir(), "docker.sock"), target: target, conns: map[net.Conn]bool{}}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *socketProxy) start() {
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		p.t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
}

func (p *socketProxy) serve(c net.Conn) {
	up, err := net.Dial("unix", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // stopped meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *socketProxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestDockerDaemonRestart: the Docker daemon goes away while the agent runs
// and comes back. Commands meanwhile fail fast with "unavailable", readiness
// fails, the connection to the server stays up, and everything works again
// once the daemon is back, including the events stream.
func TestDockerDaemonRestart(t *testing.T) {
	dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	cli := dockertest.Require(t)
	proxy := newSocketProxy(t, "/var/run/docker.sock")

	token := nodeToken(t, "node-"+randomHex(t, 6))
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	dir := t.TempDir()
	healthAddr := testsupport.FreeAddr(t)
	start(t, "lormas-agent", dir,
		"SERVER_URL="+srv.URL(), "NODE_TOKEN="+token, "NODE_NAME=e2e-daemon", "STATE_DIR="+dir+"/state",
		"HEALTH_ADDR="+healthAddr, "DOCKER_HOST=unix://"+proxy.path, "DOCKER_TIMEOUT=5s",
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

	proxy.stop()
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

	proxy.start()
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
