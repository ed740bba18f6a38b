package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// agentImage builds the real lormas-agent (static) into a FROM-scratch image
// and returns its tag; the image is removed when the test ends.
func agentImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "lormas-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=incontainer-test", "-o", bin, "../../cmd/lormas-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build lormas-agent: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	tag := "lormas-test-agent:" + hex.EncodeToString(sum[:])[:16] + "-" + randHex(3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := dockertest.BuildImage(ctx, cli, tag, "agent-in-container",
		"FROM scratch\nCOPY lormas-agent /lormas-agent\nENTRYPOINT [\"/lormas-agent\"]\n",
		dockertest.File{Name: "lormas-agent", Mode: 0o755, Data: data}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	return tag
}

// TestAgentInContainer runs the built agent the way compose.yaml does (uid
// 65532 with only the socket's group, read-only root file system, no
// capabilities, the Docker socket mounted) against an in-process server on
// the host's loopback (the agent's container uses the host network), with a
// volume root on the host:
//
//   - the root not mounted into the agent: a create with a bind under it is
//     forbidden, naming the mount to add, and the agent's log says so at
//     start (the code before this change approved it, checking the string
//     only, and Docker made the directory and followed any symlink in it);
//   - the root mounted from a different host path (-v other:root): refused
//     the same way, naming the host path it comes from;
//   - the root mounted at the identical path: approved; the directory is
//     made (by the daemon, in the agent's own container: uid 65532 may not
//     write the root-owned root) and the bind works; a symlink that workload
//     plants in its directory cannot be bound by a second create.
func TestAgentInContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the agent and an image")
	}
	cli := dockertest.Require(t)
	workload := dockertest.WorkloadImage(t)
	agentImg := agentImage(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// A root the daemon sees: t.TempDir's parent is private (0700), so use
	// a directory of our own, root-owned 0755 as Docker or the kubelet
	// would make it.
	base, err := os.MkdirTemp("", "lormas-incontainer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	root, other := filepath.Join(base, "volumes"), filepath.Join(base, "other")
	for _, d := range []string{base, root, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock, ok := strings.CutPrefix(cli.DaemonHost(), "unix://")
	if !ok {
		t.Fatalf("DOCKER_HOST %s: this test mounts the daemon's unix socket", cli.DaemonHost())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil {
		t.Fatal(err)
	}

	token := "incontainer-" + randHex(8)
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	node := "incontainer-" + randHex(4)
	var names []string
	t.Cleanup(func() {
		for _, n := range names {
			_ = cli.ContainerRemove(context.Background(), n, container.RemoveOptions{Force: true})
		}
	})

	// runAgent starts the agent with the extra bind mounts and waits for it
	// to identify itself; it returns the agent container's name.
	runAgent := func(phase string, binds ...string) string {
		name := "lormas-it-agent-" + phase + "-" + randHex(3)
		names = append(names, name)
		_, err := cli.ContainerCreate(ctx, &container.Config{
			Image: agentImg,
			User:  "65532:65532",
			Env: []string{
				"SERVER_URL=" + srv.URL(), "NODE_TOKEN=" + token, "NODE_NAME=" + node,
				"HEALTH_ADDR=", "VOLUME_ROOTS=" + root, "LOG_LEVEL=info",
				"RECONNECT_DELAY=100ms", "HEARTBEAT_INTERVAL=30s",
			},
		}, &container.HostConfig{
			NetworkMode:    "host",
			ReadonlyRootfs: true,
			CapDrop:        []string{"ALL"},
			SecurityOpt:    []string{"no-new-privileges:true"},
			GroupAdd:       []string{strconv.Itoa(int(st.Gid))},
			Binds:          append([]string{sock + ":/var/run/docker.sock"}, binds...),
		}, nil, nil, name)
		if err != nil {
			t.Fatalf("create agent container: %v", err)
		}
		if err := cli.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
			t.Fatalf("start agent container: %v", err)
		}
		srv.Expect(protocol.TypeAgentIdentify)
		return name
	}
	stopAgent := func(name string) {
		if err := cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true}); err != nil {
			t.Fatalf("remove agent container: %v", err)
		}
	}
	seq := 0
	create := func(containerID, host string, args ...string) protocol.CommandResult {
		seq++
		id := "create-" + strconv.Itoa(seq)
		names = append(names, containerID)
		cmd := map[string]any{
			"type": "command", "id": id, "action": "create", "containerId": containerID,
			"eggConfig": map[string]any{
				"image": workload, "pullPolicy": "never", "tty": false, "command": args,
				"volumes": []map[string]any{{"host": host, "container": "/data"}},
			},
		}
		b, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.SendRaw(b); err != nil {
			t.Fatal(err)
		}
		return srv.ExpectResult(id)
	}
	refused := func(r protocol.CommandResult, want string) {
		t.Helper()
		if r.Status != protocol.StatusError || r.Code != protocol.CodeForbidden || !strings.Contains(r.Error, want) {
			t.Errorf("result %s %s %q, want forbidden containing %q", r.Status, r.Code, r.Error, want)
		}
	}
	agentLog := func(name string) string {
		rc, err := cli.ContainerLogs(ctx, name, container.LogsOptions{ShowStdout: true, ShowStderr: true})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var out bytes.Buffer
		_, _ = stdcopy.StdCopy(&out, &out, rc)
		return out.String()
	}

	notMounted := "volume root " + root + " is not mounted into the agent's container at the same path; add -v " + root + ":" + root + " (compose: volumes:, Helm: volumeRoots)"
	t.Run("root not mounted", func(t *testing.T) {
		agent := runAgent("nomount")
		defer stopAgent(agent)
		r := create("lormas-it-ic-web-"+randHex(3), root+"/web", "-ls", "/data")
		refused(r, notMounted)
		t.Logf("forbidden: %s", r.Error)
		log := agentLog(agent)
		if !strings.Contains(log, "bind mounts under this volume root are refused") || !strings.Contains(log, "is not mounted into the agent's container at the same path; add -v "+root+":"+root) {
			t.Errorf("the agent's log does not say so at start:\n%s", log)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "volume root") {
				t.Logf("agent log: %s", l)
			}
		}
		if _, err := os.Lstat(root + "/web"); err == nil {
			t.Errorf("%s/web was made for a refused create", root)
		}
	})

	t.Run("root mounted from another host path", func(t *testing.T) {
		agent := runAgent("othermount", other+":"+root)
		defer stopAgent(agent)
		r := create("lormas-it-ic-web-"+randHex(3), root+"/web", "-ls", "/data")
		want := "volume root " + root + " is mounted into the agent's container from the host path " + other + ", not from the same path; add -v " + root + ":" + root
		refused(r, want)
		t.Logf("forbidden: %s", r.Error)
		if log := agentLog(agent); !strings.Contains(log, "from the host path "+other+", not from the same path") {
			t.Errorf("the agent's log does not say so at start:\n%s", log)
		}
	})

	t.Run("root mounted at the same path", func(t *testing.T) {
		agent := runAgent("samemount", root+":"+root)
		defer stopAgent(agent)
		web := "lormas-it-ic-web-" + randHex(3)
		r := create(web, root+"/web", "-symlink", "/data/escape=/", "-ls", "/data")
		if r.Status != protocol.StatusSuccess {
			t.Fatalf("create: %s %s %s\nagent log:\n%s", r.Status, r.Code, r.Error, agentLog(agent))
		}
		var fst syscall.Stat_t
		if err := syscall.Lstat(root+"/web", &fst); err != nil || fst.Mode&syscall.S_IFMT != syscall.S_IFDIR || fst.Uid != 65532 {
			t.Fatalf("%s/web: %v, mode %o uid %d; want a directory of uid 65532", root, err, fst.Mode, fst.Uid)
		}
		if err := os.WriteFile(root+"/web/marker", []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := cli.ContainerStart(ctx, web, container.StartOptions{}); err != nil {
			t.Fatalf("start %s: %v", web, err)
		}
		var out bytes.Buffer
		testsupport.WaitFor(t, "the workload to see its bind", func() bool {
			rc, err := cli.ContainerLogs(ctx, web, container.LogsOptions{ShowStdout: true})
			if err != nil {
				t.Fatal(err)
			}
			out.Reset()
			_, _ = stdcopy.StdCopy(&out, &out, rc)
			rc.Close()
			return strings.Contains(out.String(), "ls /data: escape marker\n")
		})
		r = create("lormas-it-ic-victim-"+randHex(3), root+"/web/escape", "-ls", "/data")
		refused(r, "is nested deeper than one directory below the volume root "+root)
		if log := agentLog(agent); strings.Contains(log, "bind mounts under this volume root are refused") || !strings.Contains(log, "volume root checked") {
			t.Errorf("the agent's log should say it sees the root:\n%s", log)
		}
	})
}
