package hostmetrics

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v4/common"
	"github.com/shirou/gopsutil/v4/disk"
)

var update = flag.Bool("update", false, "rewrite golden files")

// useFixture makes proc hold a copy of the fixture /proc tree testdata/name,
// as a host's /proc changes between two samples.
func useFixture(t *testing.T, proc, name string) {
	t.Helper()
	src := filepath.Join("testdata", name)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFixtureProc points the Sampler at a fake /proc tree (as
// node_exporter's fixtures do), fills it with the snapshot proc-a, then
// proc-b, and checks every number against a golden file: the CPU figure is
// the busy fraction between the two snapshots, computed without counting
// guest time twice and with iowait as idle.
func TestFixtureProc(t *testing.T) {
	proc := t.TempDir()
	useFixture(t, proc, "proc-a")
	dir := t.TempDir()
	s := New(Options{DockerRoot: dir, ProcPath: proc})
	s.window = time.Millisecond
	ctx := context.Background()

	first, err := s.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.CPU != 0 {
		t.Errorf("first sample over an unchanged /proc/stat: cpu = %v, want 0", first.CPU)
	}

	useFixture(t, proc, "proc-b")
	got, err := s.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Disk comes from statfs of the real directory: check it apart.
	want, err := disk.UsageWithContext(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.DiskTotalBytes != want.Total || got.DiskUsedBytes == 0 || got.DiskUsedBytes > got.DiskTotalBytes {
		t.Errorf("disk used/total = %d/%d, want total %d", got.DiskUsedBytes, got.DiskTotalBytes, want.Total)
	}
	got.DiskUsedBytes, got.DiskTotalBytes = 0, 0

	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	golden := filepath.Join("testdata", "fixture.golden.json")
	if *update {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantJSON, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(b, wantJSON) {
		t.Errorf("resources:\n%s\nwant (%s):\n%s", b, golden, wantJSON)
	}

	// Counters going backwards (another /proc) restart the baseline and
	// repeat the last figure instead of reporting nonsense.
	useFixture(t, proc, "proc-a")
	back, err := s.Sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if back.CPU != got.CPU {
		t.Errorf("after counters went backwards cpu = %v, want the last value %v", back.CPU, got.CPU)
	}
	useFixture(t, proc, "proc-b")
	again, _ := s.Sample(ctx)
	if again.CPU != got.CPU {
		t.Errorf("a->b again: cpu = %v, want %v", again.CPU, got.CPU)
	}
}

func TestFixtureGoldenValues(t *testing.T) {
	// The golden file must hold the hand-computed figures, so that -update
	// cannot silently bless a wrong computation.
	b, err := os.ReadFile(filepath.Join("testdata", "fixture.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g map[string]any
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"cpu":              0.5714, // busy (600 user incl. 400 guest + 200 system) / (800 + 400 idle + 200 iowait)
		"memory":           "4000MB",
		"memoryUsedBytes":  float64((16384000 - 12288000) * 1024),
		"memoryTotalBytes": float64(16384000 * 1024),
		"cpuCores":         float64(4),
		"load1":            0.52,
		"load5":            1.25,
		"load15":           2.5,
		"uptimeSeconds":    float64(12345),
	}
	for k, v := range want {
		if g[k] != v {
			t.Errorf("golden %s = %v, want %v", k, g[k], v)
		}
	}
}

func TestUnreadableProc(t *testing.T) {
	_, err := New(Options{ProcPath: t.TempDir()}).Sample(context.Background())
	if err == nil {
		t.Fatal("Sample with an empty /proc succeeded")
	}
	for _, want := range []string{"cpu times", "stat", "memory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestFirstSampleHonoursContext(t *testing.T) {
	s := New(Options{})
	s.window = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Sample(ctx); err == nil {
		t.Error("first sample ignored a cancelled context")
	}
}

// TestCPUFollowsTheCounters feeds /proc/stat snapshots to one Sampler and
// checks the busy fraction of each interval: all busy, all idle, half and
// half, guest time (already in user) not counted twice, iowait as idle, no
// tick (the last figure again) and counters going backwards (restart, the
// last figure again). Before, a test spun every CPU and wanted at least
// 50% busy, which a loaded machine cannot promise.
func TestCPUFollowsTheCounters(t *testing.T) {
	proc := t.TempDir()
	s := New(Options{ProcPath: proc})
	s.window = 0
	ctx := context.WithValue(context.Background(), common.EnvKey, s.env)
	// user nice system idle iowait irq softirq steal guest guest_nice
	type times [10]int
	write := func(c times) {
		line := "cpu "
		for _, v := range c {
			line += " " + strconv.Itoa(v)
		}
		if err := os.WriteFile(filepath.Join(proc, "stat"), []byte(line+"\nintr 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(times{100, 0, 0, 100})
	if got, err := s.cpuBusy(ctx); err != nil || got != 0 {
		t.Fatalf("first interval (no change) = %v, %v; want 0", got, err)
	}
	for _, c := range []struct {
		name string
		now  times
		want float64
	}{
		{"all busy", times{200, 0, 0, 100}, 1},
		{"all idle", times{200, 0, 0, 300}, 0},
		{"half and half", times{250, 25, 25, 400}, 0.5},
		{"guest counted once", times{350, 25, 25, 500, 0, 0, 0, 0, 100}, 0.5},
		{"iowait is idle", times{350, 25, 25, 500, 100, 10, 10, 0, 100}, 0.1667},
		{"irq, softirq and steal are busy", times{350, 25, 25, 500, 100, 60, 60, 100, 100}, 1},
		{"no tick: the last figure", times{350, 25, 25, 500, 100, 60, 60, 100, 100}, 1},
		{"backwards: the last figure", times{10, 0, 0, 10}, 1},
		{"after a restart", times{20, 0, 0, 40}, 0.25},
	} {
		write(c.now)
		got, err := s.cpuBusy(ctx)
		if err != nil || got != c.want {
			t.Errorf("%s: cpu = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

// TestRealHost samples this machine: plausible values. (How busy the host
// is decides nothing here; TestCPUFollowsTheCounters checks the figure.)
func TestRealHost(t *testing.T) {
	r, err := New(Options{}).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sample: %+v", r)
	if r.CPU < 0 || r.CPU > 1 {
		t.Errorf("cpu %v outside 0..1", r.CPU)
	}
	if r.MemoryTotalBytes == 0 || r.MemoryUsedBytes == 0 || r.MemoryUsedBytes > r.MemoryTotalBytes {
		t.Errorf("memory used/total %d/%d", r.MemoryUsedBytes, r.MemoryTotalBytes)
	}
	if !strings.HasSuffix(r.Memory, "MB") || r.Memory == "0MB" {
		t.Errorf("memory string %q", r.Memory)
	}
	if r.CPUCores < 1 || r.CPUCores < runtime.NumCPU() {
		t.Errorf("cpuCores %d (runtime sees %d)", r.CPUCores, runtime.NumCPU())
	}
	if r.DiskTotalBytes == 0 || r.DiskUsedBytes > r.DiskTotalBytes {
		t.Errorf("disk used/total %d/%d", r.DiskUsedBytes, r.DiskTotalBytes)
	}
	if r.UptimeSeconds == 0 || r.Load1 < 0 {
		t.Errorf("uptime %d load1 %v", r.UptimeSeconds, r.Load1)
	}
}

// The paths are the Sampler's own: HOST_PROC in the process environment
// (here a /proc with nothing in it) changes nothing, so a HOST_PROC set in
// .env only and handed over in Options is the one read.
func TestPathsAreNotReadFromTheEnvironment(t *testing.T) {
	t.Setenv("HOST_PROC", t.TempDir())
	t.Setenv("HOST_SYS", t.TempDir())
	if _, err := New(Options{}).Sample(context.Background()); err != nil {
		t.Errorf("Sample read HOST_PROC from the environment: %v", err)
	}
	proc := t.TempDir()
	useFixture(t, proc, "proc-b")
	r, err := New(Options{ProcPath: proc}).Sample(context.Background())
	if err != nil || r.UptimeSeconds != 12345 || r.MemoryTotalBytes != 16384000*1024 {
		t.Errorf("sample of the fixture = %+v, %v; want its uptime and memory", r, err)
	}
}

func TestConcurrentSamples(t *testing.T) {
	s := New(Options{})
	s.window = 10 * time.Millisecond
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if r, err := s.Sample(context.Background()); err != nil || r.CPU < 0 || r.CPU > 1 {
					t.Errorf("sample %+v %v", r, err)
				}
			}
		})
	}
	// The agent learns the data root while heartbeats sample.
	wg.Go(func() { s.SetDockerRoot(t.TempDir()) })
	wg.Wait()
}

// SetDockerRoot changes the file system whose usage later Samples report.
func TestSetDockerRoot(t *testing.T) {
	s := New(Options{DockerRoot: filepath.Join(t.TempDir(), "missing")}) // falls back to "/"
	dir := "/dev/shm"                                                    // another file system where there is one
	if _, err := os.Stat(dir); err != nil {
		dir = t.TempDir()
	}
	s.SetDockerRoot(dir)
	want, err := disk.Usage(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Sample(context.Background())
	if err != nil || r.DiskTotalBytes != want.Total {
		t.Errorf("disk total %d (%v), want %d: the usage of %s", r.DiskTotalBytes, err, want.Total, dir)
	}
	s.SetDockerRoot("")
	if got := *s.dockerRoot.Load(); got != DefaultDockerRoot {
		t.Errorf("SetDockerRoot(\"\") gave %q, want %q", got, DefaultDockerRoot)
	}
}
