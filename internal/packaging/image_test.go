package packaging

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"

	"github.com/lormas/lormas-agent/internal/dockertest"
)

const dockerSocket = "/var/run/docker.sock"

// TestImageMetadata builds both targets from the real Dockerfile and checks
// what the images promise before anything runs: non-root user, entrypoint,
// HEALTHCHECK through the binary, ports, OCI labels, and the build arguments
// compiled into the binary.
func TestImageMetadata(t *testing.T) {
	imgs := buildImages(t)
	t.Logf("IMAGE SIZE: agent %s, server %s", humanBytes(imgs.agent.Size), humanBytes(imgs.server.Size))

	for _, c := range []struct {
		name       string
		cfg        *dockerspec.DockerOCIImageConfig
		entrypoint string
		ports      []string
	}{
		// The agent's health endpoint listens on loopback in its container
		// (HEALTHCHECK runs there): no port to expose.
		{"lormas-agent", imgs.agent.Config, "/usr/local/bin/lormas-agent", nil},
		{"lormas-server", imgs.server.Config, "/usr/local/bin/lormas-server", []string{"3000/tcp"}},
	} {
		cfg := c.cfg
		if cfg == nil {
			t.Fatalf("%s image has no config", c.name)
		}
		if cfg.User != "65532:65532" {
			t.Errorf("%s user %q, want 65532:65532", c.name, cfg.User)
		}
		if !slices.Equal(cfg.Entrypoint, []string{c.entrypoint}) {
			t.Errorf("%s entrypoint %v, want [%s]", c.name, cfg.Entrypoint, c.entrypoint)
		}
		if exposed := slices.Sorted(maps.Keys(cfg.ExposedPorts)); !slices.Equal(exposed, c.ports) {
			t.Errorf("%s exposes %v, want %v", c.name, exposed, c.ports)
		}
		for label, want := range map[string]string{
			"org.opencontainers.image.title":    c.name,
			"org.opencontainers.image.version":  buildVersion,
			"org.opencontainers.image.revision": buildCommit,
			"org.opencontainers.image.source":   "https://github.com/lormas/lormas-agent",
		} {
			if got := cfg.Labels[label]; got != want {
				t.Errorf("%s label %s=%q, want %q", c.name, label, got, want)
			}
		}
	}
	// The image keeps the agent's loopback health default: a HEALTH_ADDR
	// on every interface would serve /metrics to whatever shares the
	// container's network.
	for _, kv := range imgs.agent.Config.Env {
		if v, ok := strings.CutPrefix(kv, "HEALTH_ADDR="); ok && !strings.HasPrefix(v, "127.0.0.1:") {
			t.Errorf("agent image sets HEALTH_ADDR=%s, want the loopback default", v)
		}
	}
	for name, hc := range map[string]*dockerspec.HealthcheckConfig{
		"lormas-agent": imgs.agent.Config.Healthcheck, "lormas-server": imgs.server.Config.Healthcheck,
	} {
		if want := []string{"CMD", "/usr/local/bin/" + name, "healthcheck"}; hc == nil || !slices.Equal(hc.Test, want) {
			t.Errorf("%s HEALTHCHECK %+v, want %v", name, hc, want)
		}
	}

	cli := dockertest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, code := runOnce(ctx, t, cli, agentTag, []string{"version"})
	if code != 0 || !strings.Contains(out, buildVersion) || !strings.Contains(out, buildCommit) {
		t.Errorf("lormas-agent version exited %d printing %q: want version %s and commit %s from the build arguments", code, out, buildVersion, buildCommit)
	}
	// The image has no shell: nothing but the binary can run in it.
	if _, code := runOnce(ctx, t, cli, agentTag, nil, "/bin/sh", "-c", "true"); code == 0 {
		t.Error("/bin/sh runs in the agent image; the final stage must be distroless")
	}
}

// TestImageRuntime runs the server and the agent from the images as operators
// would: the agent as uid 65532 with only the Docker socket's group, a
// read-only root file system, the socket and /proc mounted, no capabilities.
// Its HEALTHCHECK must turn healthy, and a create/start/logs/delete cycle of
// the test workload through the server's API must work end to end.
func TestImageRuntime(t *testing.T) {
	buildImages(t)
	cli := dockertest.Require(t)
	workload := dockertest.WorkloadImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	gid := socketGroup(t)
	netName := uniqueName("lormas-pkgtest-net-")
	if _, err := cli.NetworkCreate(ctx, netName, network.CreateOptions{Labels: map[string]string{"lormas.test": "packaging"}}); err != nil {
		t.Fatalf("network: %v", err)
	}
	t.Cleanup(func() { _ = cli.NetworkRemove(context.Background(), netName) })

	adminToken := randomToken()
	serverName := uniqueName("lormas-pkgtest-server-")
	serverID := startContainer(ctx, t, cli, serverName, &container.Config{
		Image:        serverTag,
		Env:          []string{"ADMIN_TOKEN=" + adminToken, "LOG_LEVEL=debug"},
		ExposedPorts: nat.PortSet{"3000/tcp": {}},
		Healthcheck:  &container.HealthConfig{Interval: time.Second, Timeout: 5 * time.Second, Retries: 3},
	}, &container.HostConfig{
		NetworkMode:    container.NetworkMode(netName),
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true"},
		PortBindings:   nat.PortMap{"3000/tcp": {{HostIP: "127.0.0.1", HostPort: "0"}}},
	})
	waitHealthy(ctx, t, cli, serverID)
	api := newAdminAPI("http://"+publishedAddr(ctx, t, cli, serverID, "3000/tcp"), adminToken)

	var created struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	nodeName := uniqueName("pkgtest-node-")
	if err := retry(ctx, func() error {
		_, err := api.do(ctx, "POST", "/api/nodes", map[string]string{"name": nodeName, "description": "packaging test"}, &created)
		return err
	}); err != nil {
		t.Fatalf("create node on the server: %v\nserver logs:\n%s", err, containerLogs(t, cli, serverID))
	}

	agentName := uniqueName("lormas-pkgtest-agent-")
	agentID := startContainer(ctx, t, cli, agentName, &container.Config{
		Image: agentTag,
		Env: []string{
			"SERVER_URL=ws://" + serverName + ":3000",
			"NODE_TOKEN=" + created.Token,
			"NODE_NAME=" + nodeName,
			"HOST_PROC=/host/proc",
			"HEARTBEAT_INTERVAL=1s",
			"LOG_LEVEL=debug",
		},
		// Only the timing is changed; the test command is the image's own.
		Healthcheck: &container.HealthConfig{Interval: time.Second, Timeout: 5 * time.Second, Retries: 3},
	}, &container.HostConfig{
		NetworkMode:    container.NetworkMode(netName),
		Binds:          []string{dockerSocket + ":" + dockerSocket, "/proc:/host/proc:ro"},
		GroupAdd:       []string{strconv.Itoa(gid)},
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true"},
	})

	// What runs is what the image promises.
	inspect, err := cli.ContainerInspect(ctx, agentID)
	if err != nil {
		t.Fatal(err)
	}
	if inspect.Config.User != "65532:65532" || !inspect.HostConfig.ReadonlyRootfs || inspect.HostConfig.Privileged {
		t.Errorf("agent container user %q read-only %v privileged %v", inspect.Config.User, inspect.HostConfig.ReadonlyRootfs, inspect.HostConfig.Privileged)
	}
	if hc := inspect.Config.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/usr/local/bin/lormas-agent", "healthcheck"}) {
		t.Errorf("agent container health test %+v: want the image's", hc)
	}
	waitHealthy(ctx, t, cli, agentID)
	top, err := cli.ContainerTop(ctx, agentID, []string{"-o", "pid,uid,gid,supgid,comm"})
	if err != nil {
		t.Fatalf("top: %v", err)
	}
	if len(top.Processes) != 1 {
		t.Fatalf("agent container runs %v, want one process", top.Processes)
	}
	proc := top.Processes[0] // pid uid gid supgid comm
	if proc[1] != "65532" || proc[2] != "65532" || !slices.Contains(strings.Split(proc[3], ","), strconv.Itoa(gid)) {
		t.Errorf("agent process uid %s gid %s groups %s: want 65532/65532 with the socket's group %d", proc[1], proc[2], proc[3], gid)
	}

	n := api.waitNode(ctx, t, nodeName)
	if n.ID != created.ID {
		t.Errorf("connected node id %s, created %s", n.ID, created.ID)
	}
	if n.AgentVersion == nil || *n.AgentVersion != buildVersion {
		t.Errorf("agentVersion %v, want %s", n.AgentVersion, buildVersion)
	}
	t.Logf("node %s connected: resources %s", n.Name, n.Resources)
	driveWorkload(ctx, t, api, cli, n.ID, workload)
}

// startContainer creates and starts a container that is removed when the
// test ends; on failure its logs are printed.
func startContainer(ctx context.Context, t *testing.T, cli *client.Client, name string, cfg *container.Config, hc *container.HostConfig) string {
	t.Helper()
	hc.LogConfig = container.LogConfig{Type: "json-file"}
	resp, err := cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, containerLogs(t, cli, resp.ID))
		}
		_ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	})
	if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return resp.ID
}

// runOnce runs the image with cmd (and entrypoint, when given) to completion
// and returns its output and exit code.
func runOnce(ctx context.Context, t *testing.T, cli *client.Client, img string, cmd []string, entrypoint ...string) (string, int) {
	t.Helper()
	cfg := &container.Config{Image: img, Cmd: cmd}
	if len(entrypoint) > 0 {
		cfg.Entrypoint = entrypoint
	}
	name := uniqueName("lormas-pkgtest-once-")
	resp, err := cli.ContainerCreate(ctx, cfg, &container.HostConfig{ReadonlyRootfs: true}, nil, nil, name)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	defer func() {
		_ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}()
	waitC, errC := cli.ContainerWait(ctx, resp.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		return err.Error(), 127 // e.g. the executable does not exist
	}
	var code int
	select {
	case w := <-waitC:
		code = int(w.StatusCode)
	case err := <-errC:
		t.Fatalf("wait %s: %v", name, err)
	}
	return containerLogs(t, cli, resp.ID), code
}

func containerLogs(t *testing.T, cli *client.Client, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "200"})
	if err != nil {
		return "(logs: " + err.Error() + ")"
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		return out.String() + "(logs: " + err.Error() + ")"
	}
	return out.String()
}

// publishedAddr is the 127.0.0.1 address Docker published port on.
func publishedAddr(ctx context.Context, t *testing.T, cli *client.Client, id, port string) string {
	t.Helper()
	inspect, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	bindings := inspect.NetworkSettings.Ports[nat.Port(port)]
	if len(bindings) == 0 {
		t.Fatalf("port %s not published: %+v", port, inspect.NetworkSettings.Ports)
	}
	return net.JoinHostPort("127.0.0.1", bindings[0].HostPort)
}

// waitHealthy waits for the container's HEALTHCHECK to report healthy.
func waitHealthy(ctx context.Context, t *testing.T, cli *client.Client, id string) {
	t.Helper()
	for {
		inspect, err := cli.ContainerInspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !inspect.State.Running {
			t.Fatalf("container exited (%d) before it was healthy:\n%s", inspect.State.ExitCode, containerLogs(t, cli, id))
		}
		if h := inspect.State.Health; h != nil && h.Status == container.Healthy {
			return
		}
		select {
		case <-ctx.Done():
			var probes []string
			if h := inspect.State.Health; h != nil {
				for _, l := range h.Log {
					probes = append(probes, fmt.Sprintf("exit %d: %s", l.ExitCode, strings.TrimSpace(l.Output)))
				}
			}
			t.Fatalf("container never turned healthy; probes: %q", probes)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// socketGroup is the group owning the Docker socket: the one group the
// non-root agent gets.
func socketGroup(t *testing.T) int {
	t.Helper()
	fi, err := os.Stat(dockerSocket)
	if err != nil {
		unavailable(t, "the images are tested against the local socket %s: %v", dockerSocket, err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Gid)
}

// retry calls f until it succeeds or ctx ends, for servers still starting.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(300 * time.Millisecond):
		}
	}
}
