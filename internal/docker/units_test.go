package docker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

func TestDockerErrorCodes(t *testing.T) {
	daemon := func(kind error, msg string) error {
		return fmt.Errorf("%w", &daemonErr{kind: kind, msg: daemonPrefix + msg})
	}
	tests := []struct {
		err      error
		code     protocol.Code
		wantText string
	}{
		{daemon(cerrdefs.ErrNotFound, "No such container: web-1"), protocol.CodeNotFound, "start container web-1: No such container: web-1 (Status: 404)"},
		{daemon(cerrdefs.ErrConflict, "Conflict. The container name is in use"), protocol.CodeConflict, "(Status: 409)"},
		{daemon(cerrdefs.ErrInvalidArgument, "invalid reference format"), protocol.CodeInvalid, "(Status: 400)"},
		{daemon(cerrdefs.ErrPermissionDenied, "denied"), protocol.CodeForbidden, "(Status: 403)"},
		{daemon(cerrdefs.ErrInternal, "boom"), protocol.CodeInternal, "boom (Status: 500)"},
		{daemon(cerrdefs.ErrUnavailable, "shutting down"), protocol.CodeUnavailable, "(Status: 503)"},
		{context.DeadlineExceeded, protocol.CodeTimeout, "did not answer in time"},
		{fmt.Errorf("request: %w", context.DeadlineExceeded), protocol.CodeTimeout, "did not answer in time"},
		{errors.New("weird"), protocol.CodeInternal, "start container web-1: weird"},
	}
	for _, tt := range tests {
		err := dockerError(tt.err, "start container %s", "web-1")
		if got := protocol.CodeOf(err); got != tt.code {
			t.Errorf("%v: code %s, want %s", tt.err, got, tt.code)
		}
		if !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("%v: text %q, want it to contain %q", tt.err, err, tt.wantText)
		}
		if strings.Contains(err.Error(), daemonPrefix) {
			t.Errorf("text %q repeats the client's prefix", err)
		}
		if !errors.Is(err, tt.err) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v: the cause is not kept for errors.Is", tt.err)
		}
	}
	// An error that already has a code keeps it.
	inner := protocol.Errorf(protocol.CodeForbidden, "volume refused")
	if err := dockerError(inner, "create container x"); protocol.CodeOf(err) != protocol.CodeForbidden || err.Error() != "create container x: volume refused" {
		t.Errorf("protocol error rewrapped as %q (%s)", err, protocol.CodeOf(err))
	}
}

// daemonErr mimics the Docker client's HTTP error: a daemon message and an
// errdefs class.
type daemonErr struct {
	kind error
	msg  string
}

func (e *daemonErr) Error() string { return e.msg }
func (e *daemonErr) Unwrap() error { return e.kind }

func TestCPUPercent(t *testing.T) {
	var s container.StatsResponse
	s.PreCPUStats.CPUUsage.TotalUsage = 1_000_000_000
	s.PreCPUStats.SystemUsage = 100_000_000_000
	s.CPUStats.CPUUsage.TotalUsage = 1_500_000_000     // +0.5 s of CPU
	s.CPUStats.SystemUsage = 102_000_000_000           // +2 s of host time across all CPUs
	s.CPUStats.OnlineCPUs = 2                          // = 1 s wall clock on 2 CPUs
	if got := cpuPercent(s); math.Abs(got-50) > 1e-9 { // half of one CPU
		t.Errorf("cpuPercent = %v, want 50", got)
	}
	s.CPUStats.OnlineCPUs = 0
	s.CPUStats.CPUUsage.PercpuUsage = []uint64{1, 2, 3, 4}
	if got := cpuPercent(s); math.Abs(got-100) > 1e-9 {
		t.Errorf("cpuPercent from percpu count = %v, want 100", got)
	}
	var first container.StatsResponse // no previous sample
	first.CPUStats = s.CPUStats
	first.PreCPUStats.CPUUsage.TotalUsage = s.CPUStats.CPUUsage.TotalUsage
	if got := cpuPercent(first); got != 0 {
		t.Errorf("cpuPercent without a delta = %v, want 0", got)
	}
}

func TestMemoryUsage(t *testing.T) {
	tests := []struct {
		name  string
		stats container.MemoryStats
		want  uint64
	}{
		{"cgroup v1", container.MemoryStats{Usage: 100 << 20, Stats: map[string]uint64{"total_inactive_file": 30 << 20, "inactive_file": 1}}, 70 << 20},
		{"cgroup v2", container.MemoryStats{Usage: 100 << 20, Stats: map[string]uint64{"inactive_file": 40 << 20}}, 60 << 20},
		{"no stats", container.MemoryStats{Usage: 5 << 20}, 5 << 20},
		{"cache above usage", container.MemoryStats{Usage: 5, Stats: map[string]uint64{"inactive_file": 50}}, 5},
	}
	for _, tt := range tests {
		if got := memoryUsage(tt.stats); got != tt.want {
			t.Errorf("%s: memoryUsage = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestStatsResult(t *testing.T) {
	var s container.StatsResponse
	s.Read = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Networks = map[string]container.NetworkStats{"eth0": {RxBytes: 10, TxBytes: 20}, "eth1": {RxBytes: 1, TxBytes: 2}}
	s.BlkioStats.IoServiceBytesRecursive = []container.BlkioStatEntry{{Op: "Read", Value: 100}, {Op: "Write", Value: 7}, {Op: "read", Value: 1}, {Op: "Total", Value: 108}}
	s.PidsStats.Current = 3
	s.MemoryStats.Limit = 1 << 30
	r := statsResult("web-1", s)
	if r.NetworkRxBytes != 11 || r.NetworkTxBytes != 22 || r.BlockReadBytes != 101 || r.BlockWriteBytes != 7 ||
		r.Pids != 3 || r.MemoryLimitBytes != 1<<30 || r.Timestamp != "2026-01-02T03:04:05.000Z" || r.ContainerID != "web-1" {
		t.Errorf("statsResult = %+v", r)
	}
}

func TestContainerEvent(t *testing.T) {
	e := &Engine{owner: policy.Ownership{NodeID: "node-1"}}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	msg := func(action string, attrs map[string]string) events.Message {
		a := map[string]string{"lormas.managed": "true", "lormas.node": "node-1", "lormas.container": "web-1", "name": "web-1"}
		for k, v := range attrs {
			a[k] = v
		}
		return events.Message{Type: events.ContainerEventType, Action: events.Action(action), Actor: events.Actor{ID: "abc", Attributes: a}, TimeNano: at.UnixNano()}
	}
	ev, ok := e.containerEvent(msg("die", map[string]string{"exitCode": "137"}))
	if !ok || ev.ContainerID != "web-1" || ev.Action != "die" || ev.ExitCode == nil || *ev.ExitCode != 137 || ev.Timestamp != "2026-01-02T03:04:05.006Z" {
		t.Errorf("die event = %+v, %t", ev, ok)
	}
	if ev, ok := e.containerEvent(msg("health_status: unhealthy", nil)); !ok || ev.Action != "health_status: unhealthy" {
		t.Errorf("health event = %+v, %t", ev, ok)
	}
	if ev, ok := e.containerEvent(msg("oom", nil)); !ok || ev.OOMKilled == nil || !*ev.OOMKilled {
		t.Errorf("oom event = %+v, %t", ev, ok)
	}
	for _, a := range []string{"start", "stop", "kill", "restart", "destroy"} {
		if ev, ok := e.containerEvent(msg(a, nil)); !ok || ev.Action != a || ev.ExitCode != nil {
			t.Errorf("%s event = %+v, %t", a, ev, ok)
		}
	}
	for _, a := range []string{"exec_start: sh", "attach", "create", "rename", "starting"} {
		if _, ok := e.containerEvent(msg(a, nil)); ok {
			t.Errorf("%s relayed, want it dropped", a)
		}
	}
	if _, ok := e.containerEvent(msg("start", map[string]string{"lormas.node": "node-2"})); ok {
		t.Error("another node's event relayed")
	}
	if _, ok := e.containerEvent(msg("start", map[string]string{"lormas.managed": "false"})); ok {
		t.Error("an unmanaged container's event relayed")
	}
}

func TestProgressReporter(t *testing.T) {
	var got []string
	r := newProgressReporter(func(stage, detail string) { got = append(got, stage+" "+detail) })
	now := time.Unix(0, 0)
	r.now = func() time.Time { return now }
	step := func(d time.Duration, m jsonmessage.JSONMessage) { now = now.Add(d); r.report(m) }
	dl := func(cur int64) jsonmessage.JSONMessage {
		return jsonmessage.JSONMessage{ID: "l1", Status: "Downloading", Progress: &jsonmessage.JSONProgress{Current: cur, Total: 100}}
	}
	step(0, jsonmessage.JSONMessage{Status: "Pulling from library/x", ID: "latest"})
	step(0, jsonmessage.JSONMessage{ID: "l1", Status: "Pulling fs layer"})
	step(0, dl(10))                    // status change: reported
	step(100*time.Millisecond, dl(20)) // same status within a second: skipped
	step(100*time.Millisecond, dl(30)) // skipped
	step(time.Second, dl(90))          // a second later: reported
	step(0, jsonmessage.JSONMessage{ID: "l1", Status: "Pull complete"})
	step(0, jsonmessage.JSONMessage{})
	want := []string{
		"pull latest: Pulling from library/x",
		"pull l1: Pulling fs layer",
		"pull l1: Downloading 10/100 bytes",
		"pull l1: Downloading 90/100 bytes",
		"pull l1: Pull complete",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("progress:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	newProgressReporter(nil).report(dl(1)) // no callback: no panic
}

func TestNewEngineOptions(t *testing.T) {
	root := t.TempDir()
	sock := root + "/run/docker.sock"
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	for _, bad := range []Options{
		{DiskLimitMode: "sometimes"},
		{VolumeRoots: []string{"/"}},
		{VolumeRoots: []string{"relative"}},
		{LogMaxSize: "lots"},
	} {
		if e, err := New(bad); err == nil {
			e.Close()
			t.Errorf("New(%+v): no error", bad)
		}
	}
	// Judged as on a host (this test may itself run in a container).
	host := probeFor(t, "host.txt", false, nil)
	host.DataRoot = func(context.Context) (string, error) { return "/var/lib/docker", nil }
	e, err := New(Options{VolumeRoots: []string{root}, probe: &host})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.CheckRoots(context.Background())
	if e.diskMode != DiskLimitWarn || e.pidsLimit != DefaultPidsLimit || e.callTimeout != DefaultCallTimeout ||
		e.logOpts["max-size"] != "10485760" || e.logOpts["max-file"] != "3" {
		t.Errorf("defaults: mode %q pids %d timeout %v log %v", e.diskMode, e.pidsLimit, e.callTimeout, e.logOpts)
	}
	for _, p := range []string{sock, root + "/run"} {
		if _, err := e.volumes.Check(p); protocol.CodeOf(err) != protocol.CodeForbidden {
			t.Errorf("%s, holding the DOCKER_HOST socket, is mountable: %v", p, err)
		}
	}
	if _, err := e.volumes.Check(root + "/data"); err != nil {
		t.Errorf("a plain path under the root: %v", err)
	}
	e2, err := New(Options{PidsLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if e2.pidsLimit != 0 {
		t.Errorf("PidsLimit -1 gave %d, want 0 (unlimited)", e2.pidsLimit)
	}
}

// The engine trusts its parameters to come from a validated command, but
// refuses the values Docker would read as "everything" or that would stop
// a stream, before it asks the daemon anything (a guard against a caller
// that skipped Validate).
func TestParamsGuards(t *testing.T) {
	e, err := New(Options{Daemon: Daemon{Host: "unix://" + t.TempDir() + "/none.sock"}, NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if _, err := e.Logs(ctx, protocol.LogsParams{ContainerID: "c", Lines: -1}); protocol.CodeOf(err) != protocol.CodeInvalid {
		t.Errorf("Logs with lines -1: %v, want invalid", err)
	}
	if err := e.FollowLogs(ctx, protocol.LogsParams{ContainerID: "c", Lines: -5}, nil); protocol.CodeOf(err) != protocol.CodeInvalid {
		t.Errorf("FollowLogs with lines -5: %v, want invalid", err)
	}
	if _, err := e.FollowStats(ctx, protocol.StatsParams{ContainerID: "c"}, nil); protocol.CodeOf(err) != protocol.CodeInvalid {
		t.Errorf("FollowStats with no interval: %v, want invalid", err)
	}
}
