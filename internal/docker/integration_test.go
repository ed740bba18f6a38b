package docker

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/go-connections/nat"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestCreateAsAsked creates a container with every option and checks each
// one in Docker's own view of it, then that the published port answers.
func TestCreateAsAsked(t *testing.T) {
	it := newIT(t)
	name := it.name("full")
	vol := "lormas-it-vol-" + randHex(4)
	t.Cleanup(func() { _ = it.cli.VolumeRemove(context.Background(), vol, true) })
	egg := it.egg("-listen", ":8080", "-listen-udp", ":5353")
	egg.Ports = []protocol.Port{
		{Host: 0, Container: 8080, HostIP: "127.0.0.1"},
		{Host: 0, Container: 5353, Protocol: "udp", HostIP: "127.0.0.1"},
	}
	egg.Volumes = []protocol.Volume{
		{Host: it.root + "/data", Container: "/data"},
		{Host: it.root + "/conf", Container: "/conf", ReadOnly: true},
		{Host: vol, Container: "/vol"},
	}
	egg.Labels = map[string]string{"team": "it"}
	egg.RestartPolicy = "on-failure"
	egg.StopSignal = "SIGINT"
	cmd := it.createCmd(name, egg)
	cmd.Resources = &protocol.Resources{CPU: 0.5, Memory: "512m", Pids: 100}
	cmd.Environment = map[string]string{"GREETING": "hello", "EMPTY": ""}

	id, warnings := it.create(cmd)
	if len(warnings) != 0 {
		t.Errorf("warnings %q, want none", warnings)
	}
	c := it.inspect(name)
	if c.ID != id || c.Name != "/"+name {
		t.Errorf("id %s name %s, want %s /%s", c.ID, c.Name, id, name)
	}
	wantLabels := map[string]string{"team": "it", "lormas.managed": "true", "lormas.node": it.node, "lormas.container": name}
	for k, v := range wantLabels {
		if c.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Config.Labels[k], v)
		}
	}
	if len(c.Config.Labels["lormas.spec"]) != 64 {
		t.Errorf("lormas.spec label %q, want a sha256", c.Config.Labels["lormas.spec"])
	}
	if !slices.Contains(c.Config.Env, "GREETING=hello") || !slices.Contains(c.Config.Env, "EMPTY=") {
		t.Errorf("Env %q lacks GREETING=hello and EMPTY=", c.Config.Env)
	}
	h := c.HostConfig
	if h.NanoCPUs != 500_000_000 || h.CpusetCpus != "" {
		t.Errorf("NanoCpus %d CpusetCpus %q, want 5e8 and none", h.NanoCPUs, h.CpusetCpus)
	}
	if h.Memory != 536870912 || h.MemorySwap != 536870912 {
		t.Errorf("Memory %d MemorySwap %d, want 536870912 both", h.Memory, h.MemorySwap)
	}
	if h.PidsLimit == nil || *h.PidsLimit != 100 {
		t.Errorf("PidsLimit %v, want 100", h.PidsLimit)
	}
	if !slices.Equal(h.SecurityOpt, []string{"no-new-privileges:true"}) || h.Privileged || len(h.CapAdd) != 0 {
		t.Errorf("SecurityOpt %q Privileged %t CapAdd %v", h.SecurityOpt, h.Privileged, h.CapAdd)
	}
	if h.LogConfig.Type != "json-file" || !maps.Equal(h.LogConfig.Config, map[string]string{"max-size": "10485760", "max-file": "3"}) {
		t.Errorf("LogConfig %+v", h.LogConfig)
	}
	wantMounts := []mount.Mount{
		{Type: mount.TypeBind, Source: it.root + "/data", Target: "/data"},
		{Type: mount.TypeBind, Source: it.root + "/conf", Target: "/conf", ReadOnly: true},
		{Type: mount.TypeVolume, Source: vol, Target: "/vol"},
	}
	if len(h.Binds) != 0 || !slices.EqualFunc(h.Mounts, wantMounts, func(a, b mount.Mount) bool {
		return a.Type == b.Type && a.Source == b.Source && a.Target == b.Target && a.ReadOnly == b.ReadOnly
	}) {
		t.Errorf("Binds %q Mounts %+v, want no Binds and Mounts %+v", h.Binds, h.Mounts, wantMounts)
	}
	// The agent made the bind sources, as real directories.
	for _, d := range []string{"data", "conf"} {
		if fi, err := os.Lstat(it.root + "/" + d); err != nil || !fi.IsDir() {
			t.Errorf("bind source %s: %v %v", d, fi, err)
		}
	}
	wantPorts := nat.PortMap{
		"8080/tcp": {{HostIP: "127.0.0.1", HostPort: ""}},
		"5353/udp": {{HostIP: "127.0.0.1", HostPort: ""}},
	}
	if !maps.EqualFunc(h.PortBindings, wantPorts, slices.Equal) {
		t.Errorf("PortBindings %v, want %v", h.PortBindings, wantPorts)
	}
	if h.RestartPolicy.Name != "on-failure" || c.Config.StopSignal != "SIGINT" || !c.Config.Tty {
		t.Errorf("RestartPolicy %q StopSignal %q Tty %t", h.RestartPolicy.Name, c.Config.StopSignal, c.Config.Tty)
	}
	v, err := it.cli.VolumeInspect(it.ctx, vol)
	if err != nil {
		t.Fatalf("named volume: %v", err)
	}
	if v.Labels["lormas.managed"] != "true" || v.Labels["lormas.node"] != it.node {
		t.Errorf("volume labels %v", v.Labels)
	}

	if err := it.eng.Start(it.ctx, name); err != nil {
		t.Fatalf("Start: %v", err)
	}
	c = it.inspect(name)
	bound := c.NetworkSettings.Ports["8080/tcp"]
	if len(bound) == 0 || bound[0].HostPort == "" {
		t.Fatalf("8080/tcp published as %v", bound)
	}
	body := httpGet(t, "http://127.0.0.1:"+bound[0].HostPort+"/")
	if body != "ok\n" {
		t.Errorf("GET through the published port: %q, want ok", body)
	}

	// Delete keeps the named volume and the bind data.
	if gone, err := it.eng.Delete(it.ctx, name); err != nil || gone {
		t.Fatalf("Delete: %v, alreadyAbsent %t", err, gone)
	}
	if _, err := it.cli.VolumeInspect(it.ctx, vol); err != nil {
		t.Errorf("named volume removed with the container: %v", err)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	var body string
	testsupport.WaitFor(t, "GET "+url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return true
	})
	return body
}

// TestCreateRefusesVolumes shows that the volume policy stops a create before
// anything is created.
func TestCreateRefusesVolumes(t *testing.T) {
	it := newIT(t)
	for _, tt := range []struct {
		host string
		code protocol.Code
	}{
		{"/var/run/docker.sock", protocol.CodeForbidden},
		{"/", protocol.CodeForbidden},
		{"/proc", protocol.CodeForbidden},
		{"/etc", protocol.CodeForbidden},
		{it.root + "/../escape", protocol.CodeForbidden},
		{it.root, protocol.CodeForbidden},
		{it.root + "/a/b", protocol.CodeForbidden},
		{"relative/path", protocol.CodeInvalid},
	} {
		name := it.name("vol")
		egg := it.egg()
		egg.Volumes = []protocol.Volume{{Host: tt.host, Container: "/x"}}
		_, _, err := it.eng.Create(it.ctx, createOf(t, it.createCmd(name, egg)), nil)
		wantCode(t, "create with volume "+tt.host, err, tt.code)
		if tt.code == protocol.CodeForbidden && !strings.Contains(err.Error(), it.root) {
			t.Errorf("error %q does not name the allowed root", err)
		}
		if _, err := it.cli.ContainerInspect(it.ctx, name); err == nil {
			t.Errorf("container %s exists after a refused create", name)
		}
	}

	// A named volume the agent did not create is someone else's data.
	foreign := "lormas-it-foreign-" + randHex(4)
	if _, err := it.cli.VolumeCreate(it.ctx, volume.CreateOptions{Name: foreign}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = it.cli.VolumeRemove(context.Background(), foreign, true) })
	name := it.name("foreignvol")
	egg := it.egg()
	egg.Volumes = []protocol.Volume{{Host: foreign, Container: "/data"}}
	_, _, err := it.eng.Create(it.ctx, createOf(t, it.createCmd(name, egg)), nil)
	wantCode(t, "create with a foreign named volume", err, protocol.CodeForbidden)
	if _, err := it.cli.ContainerInspect(it.ctx, name); err == nil {
		t.Errorf("container %s exists after a refused create", name)
	}
}

// TestLogsNonTTY reads stdout and stderr of a container without a TTY.
func TestLogsNonTTY(t *testing.T) {
	it := newIT(t)
	name := it.run("notty", false, "-lines", "6", "-stderr-lines", "3", "-interval", "5ms", "-exit", "0")
	if code := it.waitExit(name); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	lines, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name}))
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	var out, errs []string
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\x00\x01\x02") || l == "" {
			t.Errorf("line %q has a \\r, a frame header byte, or is empty", l)
		}
		switch {
		case strings.HasPrefix(l, "stdout line "):
			out = append(out, l)
		case strings.HasPrefix(l, "stderr line "):
			errs = append(errs, l)
		default:
			t.Errorf("unexpected line %q", l)
		}
	}
	if want := numbered("stdout", 1, 6); !slices.Equal(out, want) {
		t.Errorf("stdout lines %q, want %q", out, want)
	}
	if want := numbered("stderr", 1, 3); !slices.Equal(errs, want) {
		t.Errorf("stderr lines %q, want %q", errs, want)
	}

	tail, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name, Lines: intp(2)}))
	if err != nil {
		t.Fatalf("Logs tail 2: %v", err)
	}
	if !slices.Equal(tail, lines[len(lines)-2:]) {
		t.Errorf("tail 2 = %q, want the last two of %q", tail, lines)
	}

	stamped, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name, Lines: intp(1), Timestamps: true}))
	if err != nil || len(stamped) != 1 {
		t.Fatalf("Logs with timestamps: %q, %v", stamped, err)
	}
	ts, rest, _ := strings.Cut(stamped[0], " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || rest != lines[len(lines)-1] {
		t.Errorf("timestamped line %q: want an RFC 3339 time and %q", stamped[0], lines[len(lines)-1])
	}
	future := protocol.Timestamp(time.Now().Add(time.Hour))
	none, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name, Since: future}))
	if err != nil || len(none) != 0 {
		t.Errorf("Logs since the future: %q, %v; want none", none, err)
	}
	// A since that is no time never reaches the Engine: the agent refuses
	// the command when it arrives (protocol.ParseSince).
}

func numbered(stream string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s line %d", stream, i))
	}
	return out
}

// TestLogsTTY reads a TTY container, whose lines end in \r\n and whose stderr
// shares the terminal.
func TestLogsTTY(t *testing.T) {
	it := newIT(t)
	name := it.run("tty", true, "-lines", "5", "-stderr-lines", "2", "-interval", "5ms", "-exit", "0")
	it.waitExit(name)
	lines, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name}))
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	var out []string
	for _, l := range lines {
		if strings.ContainsRune(l, '\r') || l == "" {
			t.Errorf("line %q has a \\r or is empty", l)
		}
		if strings.HasPrefix(l, "stdout") {
			out = append(out, l)
		}
	}
	if len(lines) != 7 {
		t.Errorf("%d lines %q, want 7", len(lines), lines)
	}
	if want := numbered("stdout", 1, 5); !slices.Equal(out, want) {
		t.Errorf("stdout lines %q, want %q", out, want)
	}
	tail, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name, Lines: intp(3)}))
	if err != nil || !slices.Equal(tail, lines[len(lines)-3:]) {
		t.Errorf("tail 3 = %q, %v; want the last three of %q", tail, err, lines)
	}
}

// TestFollowLogs follows a container until it exits, and another until the
// caller cancels.
func TestFollowLogs(t *testing.T) {
	it := newIT(t)
	name := it.run("follow", false, "-lines", "30", "-interval", "20ms", "-exit", "0")
	var got []string
	err := it.eng.FollowLogs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name, Follow: true, Lines: intp(1000)}),
		func(stream, line string) error {
			if stream != StreamStdout {
				t.Errorf("stream %q for %q", stream, line)
			}
			got = append(got, line)
			return nil
		})
	if err != nil {
		t.Fatalf("FollowLogs: %v", err)
	}
	if want := numbered("stdout", 1, 30); !slices.Equal(got, want) {
		t.Errorf("followed %q, want %q", got, want)
	}

	sleeper := it.run("sleeper", true, "-lines", "1")
	ctx, cancel := context.WithCancel(it.ctx)
	done := make(chan error, 1)
	first := make(chan string, 1)
	go func() {
		done <- it.eng.FollowLogs(ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: sleeper, Follow: true}),
			func(_, line string) error {
				select {
				case first <- line:
				default:
				}
				return nil
			})
	}()
	select {
	case l := <-first:
		if l != "stdout line 1" {
			t.Errorf("first followed line %q", l)
		}
	case <-it.ctx.Done():
		t.Fatal("no line from the running container")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("FollowLogs after cancel: %v, want nil", err)
		}
	case <-it.ctx.Done():
		t.Fatal("FollowLogs did not return after cancel")
	}
}

// TestFollowLogsSlowReader floods the log while the reader is slow: the
// reader gets every line, in order, and nothing piles up in between.
func TestFollowLogsSlowReader(t *testing.T) {
	it := newIT(t)
	const n = 20000
	// The delay lets the follow stream open before the flood, most of the time.
	name := it.run("flood", false, "-delay", "300ms", "-flood", "-lines", fmt.Sprint(n), "-exit", "0")
	first, next := 0, 0
	err := it.eng.FollowLogs(it.ctx, logsOf(t, &protocol.Command{ContainerID: name, Follow: true, Lines: intp(protocol.MaxLogLines)}),
		func(_, line string) error {
			var i int
			if _, err := fmt.Sscanf(line, "flood line %d", &i); err != nil {
				return fmt.Errorf("line %q: %w", line, err)
			}
			if next == 0 {
				first, next = i, i // the stream may begin inside the tail
			}
			if i != next {
				return fmt.Errorf("line %d after %d", i, next-1)
			}
			next++
			if i < first+200 {
				time.Sleep(time.Millisecond) // a slow server
			}
			return nil
		})
	if err != nil {
		t.Fatalf("FollowLogs: %v", err)
	}
	if next != n+1 {
		t.Errorf("followed up to line %d, want %d", next-1, n)
	}
	t.Logf("followed lines %d to %d", first, next-1)
}

// TestIdempotence repeats every action.
func TestIdempotence(t *testing.T) {
	it := newIT(t)
	name := it.name("idem")
	cmd := it.createCmd(name, it.egg())
	cmd.Environment = map[string]string{"A": "1"}
	cmd.Resources = &protocol.Resources{Memory: "64m"}
	id, _ := it.create(cmd)

	same := it.createCmd(name, it.egg())
	same.ID = "another-command"
	same.Environment = map[string]string{"A": "1"}
	same.Resources = &protocol.Resources{Memory: "64MiB"}
	if again, _ := it.create(same); again != id {
		t.Errorf("identical create: id %s, want %s", again, id)
	}
	different := it.createCmd(name, it.egg())
	different.Environment = map[string]string{"A": "2"}
	_, _, err := it.eng.Create(it.ctx, createOf(t, different), nil)
	wantCode(t, "different create", err, protocol.CodeConflict)
	if strings.Contains(err.Error(), "A=2") || strings.Contains(err.Error(), "=2") {
		t.Errorf("error %q leaks an environment value", err)
	}

	for i := range 2 {
		if err := it.eng.Start(it.ctx, name); err != nil {
			t.Fatalf("Start #%d: %v", i+1, err)
		}
	}
	if !it.inspect(name).State.Running {
		t.Fatal("not running after Start")
	}
	for i := range 2 {
		if err := it.eng.Stop(it.ctx, name, intp(5)); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
	if it.inspect(name).State.Running {
		t.Fatal("running after Stop")
	}
	if err := it.eng.Restart(it.ctx, name, intp(5)); err != nil {
		t.Fatalf("Restart of a stopped container: %v", err)
	}
	if !it.inspect(name).State.Running {
		t.Fatal("not running after Restart")
	}
	if gone, err := it.eng.Delete(it.ctx, name); err != nil || gone {
		t.Fatalf("Delete: alreadyAbsent %t, %v", gone, err)
	}
	if gone, err := it.eng.Delete(it.ctx, name); err != nil || !gone {
		t.Fatalf("second Delete: alreadyAbsent %t, %v; want true, nil", gone, err)
	}
	err = it.eng.Start(it.ctx, name)
	wantCode(t, "Start of a deleted container", err, protocol.CodeNotFound)
}

// TestUnmanagedRefused shows that containers without the agent's labels, or
// of another node, are off limits unless ALLOW_UNMANAGED.
func TestUnmanagedRefused(t *testing.T) {
	it := newIT(t)
	foreign := it.name("foreign")
	if _, err := it.cli.ContainerCreate(it.ctx, &container.Config{Image: it.img, Cmd: []string{"-lines", "1"}}, nil, nil, nil, foreign); err != nil {
		t.Fatalf("create unmanaged: %v", err)
	}
	otherNode := it.name("othernode")
	other := it.engine(Options{NodeID: "someone-else", VolumeRoots: []string{it.root}})
	if _, _, err := other.Create(it.ctx, createOf(t, it.createCmd(otherNode, it.egg())), nil); err != nil {
		t.Fatalf("create for another node: %v", err)
	}

	for _, name := range []string{foreign, otherNode} {
		checks := map[string]error{
			"start":   it.eng.Start(it.ctx, name),
			"stop":    it.eng.Stop(it.ctx, name, nil),
			"restart": it.eng.Restart(it.ctx, name, intp(1)),
			"kill":    it.eng.Kill(it.ctx, name, ""),
		}
		_, checks["delete"] = it.eng.Delete(it.ctx, name)
		_, checks["logs"] = it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name}))
		_, checks["inspect"] = it.eng.Inspect(it.ctx, name)
		_, checks["stats"] = it.eng.Stats(it.ctx, name)
		_, checks["update"] = it.eng.Update(it.ctx, name, protocol.Limits{CPU: 1})
		checks["follow"] = it.eng.FollowLogs(it.ctx, logsOf(t, &protocol.Command{ContainerID: name}), func(string, string) error { return nil })
		for action, err := range checks {
			wantCode(t, action+" "+name, err, protocol.CodeForbidden)
		}
		_, _, err := it.eng.Create(it.ctx, createOf(t, it.createCmd(name, it.egg())), nil)
		wantCode(t, "create over "+name, err, protocol.CodeConflict)
		if _, err := it.cli.ContainerInspect(it.ctx, name); err != nil {
			t.Errorf("%s is gone after refused actions: %v", name, err)
		}
	}
	items, err := it.eng.List(it.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range items {
		if i.ContainerID == foreign || i.ContainerID == otherNode {
			t.Errorf("List includes %s", i.ContainerID)
		}
	}

	allow := it.engine(Options{NodeID: it.node, VolumeRoots: []string{it.root}, AllowUnmanaged: true})
	if r, err := allow.Inspect(it.ctx, foreign); err != nil || r.State != "created" {
		t.Errorf("ALLOW_UNMANAGED inspect: %+v, %v", r, err)
	}
	if gone, err := allow.Delete(it.ctx, foreign); err != nil || gone {
		t.Errorf("ALLOW_UNMANAGED delete: %t, %v", gone, err)
	}
}

// TestContainerNamedByIDPrefix shows that a name is never resolved as a
// Docker id prefix of some other container.
func TestContainerNamedByIDPrefix(t *testing.T) {
	it := newIT(t)
	name := it.name("prefix")
	id, _ := it.create(it.createCmd(name, it.egg()))
	err := it.eng.Start(it.ctx, id[:12])
	wantCode(t, "Start by id prefix", err, protocol.CodeNotFound)
	_, err = it.eng.Inspect(it.ctx, "../../images/json")
	wantCode(t, "Inspect of a path", err, protocol.CodeInvalid)
}

// TestDiskLimit checks DISK_LIMIT_MODE against this machine's storage driver.
func TestDiskLimit(t *testing.T) {
	it := newIT(t)
	info, err := it.cli.Info(it.ctx)
	if err != nil {
		t.Fatal(err)
	}
	support := diskLimitSupport(info)
	t.Logf("storage driver %s: disk limits supported %t (%s)", info.Driver, support.Supported, support.Reason)

	name := it.name("warn")
	cmd := it.createCmd(name, it.egg())
	cmd.Resources = &protocol.Resources{Disk: "1g"}
	_, warnings := it.create(cmd)
	c := it.inspect(name)
	if support.Supported {
		if c.HostConfig.StorageOpt["size"] != "1073741824" {
			t.Errorf("StorageOpt %v, want size 1073741824", c.HostConfig.StorageOpt)
		}
	} else {
		if len(warnings) != 1 || !strings.Contains(warnings[0], info.Driver) {
			t.Errorf("warnings %q, want one naming the driver %s", warnings, info.Driver)
		}
		if len(c.HostConfig.StorageOpt) != 0 {
			t.Errorf("StorageOpt %v, want none", c.HostConfig.StorageOpt)
		}
		strict := it.engine(Options{NodeID: it.node, VolumeRoots: []string{it.root}, DiskLimitMode: DiskLimitStrict})
		name := it.name("strict")
		cmd := it.createCmd(name, it.egg())
		cmd.Resources = &protocol.Resources{Disk: "1g"}
		_, _, err := strict.Create(it.ctx, createOf(t, cmd), nil)
		wantCode(t, "strict create", err, protocol.CodeInvalid)
		if _, err := it.cli.ContainerInspect(it.ctx, name); err == nil {
			t.Error("strict mode created the container anyway")
		}
	}
}

// TestStopGracePeriod stops a container that ignores SIGTERM: Stop sends
// SIGTERM, waits the grace period, then kills it.
func TestStopGracePeriod(t *testing.T) {
	it := newIT(t)
	name := it.run("stubborn", false, "-ignore-sigterm", "-lines", "1")
	waitForLine(it, name, "stdout line 1")
	if err := it.eng.Stop(it.ctx, name, intp(1)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	c := it.inspect(name)
	if c.State.Running || c.State.ExitCode != 137 {
		t.Errorf("after Stop: running %t exit code %d, want stopped with 137 (SIGKILL)", c.State.Running, c.State.ExitCode)
	}
	lines, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{ContainerID: name}))
	if err != nil || !slices.Contains(lines, "ignoring SIGTERM") {
		t.Errorf("logs %q (%v): SIGTERM was not sent before the kill", lines, err)
	}
}

// waitForLine waits until the container has logged line, so its signal
// handlers are installed.
func waitForLine(it *itEnv, name, line string) {
	it.t.Helper()
	for {
		lines, err := it.eng.Logs(it.ctx, logsOf(it.t, &protocol.Command{ContainerID: name}))
		if err != nil {
			it.t.Fatalf("Logs: %v", err)
		}
		if slices.Contains(lines, line) {
			return
		}
		select {
		case <-it.ctx.Done():
			it.t.Fatalf("%s never logged %q", name, line)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestKillAndInspect kills, signals and inspects containers.
func TestKillAndInspect(t *testing.T) {
	it := newIT(t)
	name := it.run("kill", false, "-lines", "1")
	if err := it.eng.Kill(it.ctx, name, ""); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if code := it.waitExit(name); code != 137 {
		t.Errorf("exit code after SIGKILL %d, want 137", code)
	}
	err := it.eng.Kill(it.ctx, name, "")
	wantCode(t, "Kill of a stopped container", err, protocol.CodeConflict)
	if !strings.Contains(err.Error(), "not running") {
		t.Errorf("error %q does not say the container is not running", err)
	}

	term := it.run("term", false, "-lines", "1")
	waitForLine(it, term, "stdout line 1")
	if err := it.eng.Kill(it.ctx, term, "SIGTERM"); err != nil {
		t.Fatalf("Kill SIGTERM: %v", err)
	}
	if code := it.waitExit(term); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0 (the workload exits cleanly)", code)
	}

	exited := it.name("exit3")
	cmd := it.createCmd(exited, it.egg("-exit", "3"))
	cmd.Resources = &protocol.Resources{CPU: 0.25, Memory: "32m"}
	it.create(cmd)
	r, err := it.eng.Inspect(it.ctx, exited)
	if err != nil || r.State != "created" || r.StartedAt != "" {
		t.Errorf("Inspect before start: %+v, %v", r, err)
	}
	if err := it.eng.Start(it.ctx, exited); err != nil {
		t.Fatal(err)
	}
	it.waitExit(exited)
	r, err = it.eng.Inspect(it.ctx, exited)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != "exited" || r.Running || r.ExitCode != 3 || r.OOMKilled || r.StartedAt == "" || r.FinishedAt == "" ||
		r.ContainerID != exited || r.Image != it.img || len(r.DockerID) != 64 {
		t.Errorf("Inspect after exit: %+v", r)
	}
	if r.Limits.NanoCPUs != 250_000_000 || r.Limits.CPU != 0.25 || r.Limits.MemoryBytes != 32<<20 || r.Limits.PidsLimit != DefaultPidsLimit {
		t.Errorf("Inspect limits: %+v", r.Limits)
	}
	_, err = it.eng.Inspect(it.ctx, it.name("missing"))
	wantCode(t, "Inspect of a missing container", err, protocol.CodeNotFound)
}

// TestListStatsUpdate lists this node's containers, samples one, and changes
// its limits live.
func TestListStatsUpdate(t *testing.T) {
	it := newIT(t)
	running := it.name("running")
	cmd := it.createCmd(running, it.egg("-alloc", "33554432", "-lines", "1"))
	cmd.Resources = &protocol.Resources{CPU: 1, Memory: "128m"}
	it.create(cmd)
	if err := it.eng.Start(it.ctx, running); err != nil {
		t.Fatal(err)
	}
	created := it.name("created")
	it.create(it.createCmd(created, it.egg()))

	items, err := it.eng.List(it.ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, i := range items {
		states[i.ContainerID] = i.State
		if i.DockerID == "" || i.Image != it.img || i.CreatedAt == "" {
			t.Errorf("List item %+v", i)
		}
	}
	if want := map[string]string{running: "running", created: "created"}; !maps.Equal(states, want) {
		t.Errorf("List = %v, want exactly %v", states, want)
	}

	waitForLine(it, running, "stdout line 1") // allocated by then
	s, err := it.eng.Stats(it.ctx, running)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if s.MemoryUsageBytes < 16<<20 || s.MemoryUsageBytes > 128<<20 || s.MemoryLimitBytes != 128<<20 || s.Pids < 1 ||
		s.CPUPercent < 0 || s.Timestamp == "" || s.ContainerID != running {
		t.Errorf("Stats = %+v, want ~32 MiB used of a 128 MiB limit", s)
	}

	warnings, err := it.eng.Update(it.ctx, running, limitsOf(t, &protocol.Resources{CPU: 0.5, Memory: "256m", Pids: 50}))
	if err != nil {
		t.Fatalf("Update: %v (warnings %q)", err, warnings)
	}
	h := it.inspect(running).HostConfig
	if h.NanoCPUs != 500_000_000 || h.Memory != 256<<20 || h.MemorySwap != 256<<20 || h.PidsLimit == nil || *h.PidsLimit != 50 {
		t.Errorf("after Update: NanoCpus %d Memory %d MemorySwap %d PidsLimit %v", h.NanoCPUs, h.Memory, h.MemorySwap, h.PidsLimit)
	}
	warnings, err = it.eng.Update(it.ctx, running, limitsOf(t, &protocol.Resources{Disk: "1g"}))
	if err != nil || len(warnings) != 1 {
		t.Errorf("Update of disk: warnings %q, %v; want one warning", warnings, err)
	}
	_, err = it.eng.Update(it.ctx, running, limitsOf(t, &protocol.Resources{}))
	wantCode(t, "empty Update", err, protocol.CodeInvalid)
	_, err = it.eng.Update(it.ctx, running, limitsOf(t, &protocol.Resources{Memory: "8m"}))
	if err == nil {
		t.Fatal("Update to 8m below the 32 MiB in use: no error")
	}
	if !strings.Contains(err.Error(), "update container "+running) || !strings.Contains(err.Error(), "memory") {
		t.Errorf("Update below usage: %q, want Docker's reason", err)
	}
	t.Logf("update below usage: %v (code %s)", err, protocol.CodeOf(err))
}

// TestEvents watches a container start, die with its exit code, and go.
func TestEvents(t *testing.T) {
	it := newIT(t)
	ctx, cancel := context.WithCancel(it.ctx)
	evs := make(chan protocol.ContainerEvent, 100)
	done := make(chan error, 1)
	go func() { done <- it.eng.Events(ctx, func(e protocol.ContainerEvent) { evs <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Events: %v", err)
		}
	})
	// Events subscribes from the moment it is called, so a container made
	// after it is seen even if the subscription request is still in flight.
	name := it.run("events", false, "-exit", "5")
	it.waitExit(name)
	if _, err := it.eng.Delete(it.ctx, name); err != nil {
		t.Fatal(err)
	}
	var got []string
	for !slices.Contains(got, "destroy") {
		select {
		case e := <-evs:
			if e.ContainerID != name {
				continue // another test's container of the same daemon is not ours: different node id
			}
			got = append(got, e.Action)
			if e.Action == "die" && (e.ExitCode == nil || *e.ExitCode != 5) {
				t.Errorf("die event exit code %v, want 5", e.ExitCode)
			}
			if _, err := time.Parse(time.RFC3339, e.Timestamp); err != nil {
				t.Errorf("event timestamp %q: %v", e.Timestamp, err)
			}
		case <-it.ctx.Done():
			t.Fatalf("events so far %q: no destroy", got)
		}
	}
	want := []string{"start", "die", "destroy"}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestPullPolicies: no registry is reachable here, so every pull fails.
func TestPullPolicies(t *testing.T) {
	it := newIT(t)
	// The default is Kubernetes' rule: a tag other than latest is pulled
	// only when missing (the workload's tag is its source hash) ...
	tagged := it.name("default-tagged")
	egg := it.egg()
	egg.PullPolicy = ""
	var stages []string
	_, warnings, err := it.eng.Create(it.ctx, createOf(t, it.createCmd(tagged, egg)), func(stage, detail string) { stages = append(stages, stage) })
	if err != nil || len(warnings) != 0 || len(stages) != 0 {
		t.Errorf("default policy, tagged local image: %v, warnings %q, stages %q; want no pull", err, warnings, stages)
	}
	// ... and an image tagged latest (or not at all) is always pulled.
	latest := "lormas-test-latest-" + randHex(4) + ":latest"
	if err := it.cli.ImageTag(it.ctx, it.img, latest); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = it.cli.ImageRemove(context.Background(), latest, image.RemoveOptions{}) })
	egg = it.egg()
	egg.Image, egg.PullPolicy = latest, ""
	_, warnings, err = it.eng.Create(it.ctx, createOf(t, it.createCmd(it.name("default-latest"), egg)), nil)
	if err != nil {
		t.Fatalf("create with a failing pull and a local image: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "using the local copy") || !strings.Contains(warnings[0], latest) {
		t.Errorf("warnings %q, want one saying the pull failed and the local copy is used", warnings)
	}
	egg = it.egg()
	egg.PullPolicy = protocol.PullAlways
	_, warnings, err = it.eng.Create(it.ctx, createOf(t, it.createCmd(it.name("always"), egg)), nil)
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "using the local copy") {
		t.Errorf("pullPolicy always, tagged local image: %v, warnings %q; want a failed pull and the local copy", err, warnings)
	}

	missing := "lormas-test-missing:" + randHex(4)
	name := it.name("nolocal")
	egg = it.egg()
	egg.Image, egg.PullPolicy = missing, protocol.PullAlways
	_, _, err = it.eng.Create(it.ctx, createOf(t, it.createCmd(name, egg)), nil)
	if err == nil || !strings.Contains(err.Error(), "no local copy") || !strings.Contains(err.Error(), "pull image "+missing) {
		t.Errorf("create with a failing pull and no image: %v, want it to say the pull failed and no local copy exists", err)
	}
	if c := protocol.CodeOf(err); c == protocol.CodeInternal || c == "" {
		t.Errorf("code %q for a failed pull", c)
	}

	egg.PullPolicy = protocol.PullNever
	_, _, err = it.eng.Create(it.ctx, createOf(t, it.createCmd(name, egg)), nil)
	wantCode(t, "pullPolicy never with a missing image", err, protocol.CodeNotFound)

	egg.PullPolicy = protocol.PullMissing
	_, _, err = it.eng.Create(it.ctx, createOf(t, it.createCmd(name, egg)), nil)
	if err == nil || !strings.Contains(err.Error(), "no local copy") {
		t.Errorf("pullPolicy missing with a missing image: %v", err)
	}
	present := it.name("missing-present")
	egg = it.egg()
	egg.PullPolicy = protocol.PullMissing
	if _, warnings, err := it.eng.Create(it.ctx, createOf(t, it.createCmd(present, egg)), nil); err != nil || len(warnings) != 0 {
		t.Errorf("pullPolicy missing with a local image: %q, %v; want no pull and no warning", warnings, err)
	}

	// Validate refuses white space; the reference rule itself is the
	// engine's (upper case is no repository name).
	egg.Image = "Not-A-Valid/Reference"
	_, _, err = it.eng.Create(it.ctx, createOf(t, it.createCmd(it.name("badref"), egg)), nil)
	wantCode(t, "invalid image reference", err, protocol.CodeInvalid)
}

// TestUnreachableDaemon points DOCKER_HOST at a socket nobody listens on.
func TestUnreachableDaemon(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/dead.sock")
	e, err := New(Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	_, err = e.Info(ctx)
	wantCode(t, "Info", err, protocol.CodeUnavailable)
	err = e.Start(ctx, "web-1")
	wantCode(t, "Start", err, protocol.CodeUnavailable)
	if !strings.Contains(err.Error(), "start container web-1") || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("error %q: want the action and that the engine is unreachable", err)
	}
	_, err = e.List(ctx)
	wantCode(t, "List", err, protocol.CodeUnavailable)
	_, _, err = e.Create(ctx, createOf(t, &protocol.Command{Action: protocol.ActionCreate, ContainerID: "web-1", EggConfig: &protocol.EggConfig{Image: "nginx"}}), nil)
	wantCode(t, "Create", err, protocol.CodeUnavailable)

	evCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := e.Events(evCtx, func(protocol.ContainerEvent) { t.Error("event from a dead daemon") }); err != nil {
		t.Errorf("Events on a dead daemon returned %v, want nil when its context ends", err)
	}
}

// TestInfo reads the engine and negotiated API versions.
func TestInfo(t *testing.T) {
	it := newIT(t)
	info, err := it.eng.Info(it.ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := it.cli.ServerVersion(it.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != v.Version || info.APIVersion == "" || info.APIVersion > v.APIVersion && len(info.APIVersion) == len(v.APIVersion) {
		t.Errorf("Info = %+v, engine %s API %s", info, v.Version, v.APIVersion)
	}
}
