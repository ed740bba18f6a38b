// Package hostmetrics reads the host's resource usage for heartbeats: CPU
// busy fraction, memory, disk of Docker's data root, load and uptime, from
// /proc and /sys through gopsutil. When the agent runs in a container, the
// host's /proc is mounted elsewhere (HOST_PROC, e.g. /host/proc; /sys by
// HOST_SYS, the root by HOST_ROOT); the paths are given in Options and
// handed to gopsutil through each call's context (common.EnvKey), never
// through the process environment, as node_exporter's --path.procfs.
package hostmetrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shirou/gopsutil/v4/common"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// DefaultDockerRoot is Docker's default data root.
const DefaultDockerRoot = "/var/lib/docker"

// firstWindow is how long the first Sample measures CPU over: with no
// earlier snapshot there is nothing to diff against, and 0 would be a lie.
const firstWindow = 200 * time.Millisecond

// Options configure a Sampler.
type Options struct {
	// DockerRoot is Docker's data root (docker info: DockerRootDir), whose
	// file system's usage is reported as disk; "" means /var/lib/docker.
	// SetDockerRoot changes it once the daemon has said.
	// Under HOST_ROOT it is looked up there first; when it is not visible
	// (an agent container without the directory mounted) "/" is used, which
	// in a container is the overlay on the data root's file system.
	DockerRoot string

	// ProcPath, SysPath and RootPath are the host's /proc, /sys and root
	// file system as the agent sees them (HOST_PROC, HOST_SYS, HOST_ROOT);
	// "" means /proc, /sys and /.
	ProcPath, SysPath, RootPath string
}

// Sampler reads host resource usage. It keeps its own CPU time snapshots,
// so each Sample's CPU figure covers the time since the previous Sample (a
// heartbeat interval). Safe for concurrent use.
type Sampler struct {
	dockerRoot atomic.Pointer[string]
	proc, root string
	env        common.EnvMap // the paths, for gopsutil
	window     time.Duration

	mu      sync.Mutex
	prev    cpuTimes
	hasPrev bool
	lastCPU float64
}

// New returns a Sampler.
func New(opts Options) *Sampler {
	def := func(p, d string) string {
		if p == "" {
			return d
		}
		return p
	}
	s := &Sampler{
		proc:   def(opts.ProcPath, "/proc"),
		root:   def(opts.RootPath, "/"),
		window: firstWindow,
	}
	s.SetDockerRoot(opts.DockerRoot)
	// Every path set, so gopsutil never falls back to the environment.
	s.env = common.EnvMap{
		common.HostProcEnvKey: s.proc,
		common.HostSysEnvKey:  def(opts.SysPath, "/sys"),
		common.HostRootEnvKey: s.root,
	}
	return s
}

// SetDockerRoot sets Docker's data root, whose file system's usage later
// Samples report; "" means /var/lib/docker. The agent learns it from the
// daemon after it has started, without waiting for an answer.
func (s *Sampler) SetDockerRoot(dir string) {
	if dir == "" {
		dir = DefaultDockerRoot
	}
	s.dockerRoot.Store(&dir)
}

// ProcPath is the /proc the Sampler reads.
func (s *Sampler) ProcPath() string { return s.proc }

// Sample reads the host's resources. CPU and memory are required (the
// seed's heartbeat fields): if either cannot be read Sample returns an
// error. The extended fields are best effort and left zero when their
// source is unavailable. Containers is filled by the agent.
func (s *Sampler) Sample(ctx context.Context) (protocol.HostResources, error) {
	ctx = context.WithValue(ctx, common.EnvKey, s.env)
	var res protocol.HostResources
	var errs []error

	busy, err := s.cpuBusy(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	res.CPU = busy

	if vm, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	} else {
		used := vm.Used
		if vm.Available > 0 && vm.Available <= vm.Total {
			used = vm.Total - vm.Available
		}
		res.Memory = protocol.FormatMemory(used)
		res.MemoryUsedBytes = used
		res.MemoryTotalBytes = vm.Total
	}

	if n, err := cpu.CountsWithContext(ctx, true); err == nil && n > 0 {
		res.CPUCores = n
	} else {
		res.CPUCores = runtime.NumCPU()
	}
	if u := s.diskUsage(ctx); u != nil {
		res.DiskUsedBytes, res.DiskTotalBytes = u.Used, u.Total
	}
	if l, err := load.AvgWithContext(ctx); err == nil {
		res.Load1, res.Load5, res.Load15 = round(l.Load1), round(l.Load5), round(l.Load15)
	}
	res.UptimeSeconds = s.uptime(ctx)
	return res, errors.Join(errs...)
}

// cpuTimes is one snapshot of the aggregate CPU line of /proc/stat, in
// seconds.
type cpuTimes struct{ busy, idle float64 }

func (s *Sampler) readCPU(ctx context.Context) (cpuTimes, error) {
	ts, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return cpuTimes{}, fmt.Errorf("cpu times: %w", err)
	}
	// gopsutil returns no error, just nothing, when /proc/stat is unreadable.
	if len(ts) == 0 {
		return cpuTimes{}, errors.New("cpu times: cannot read the cpu line of " + filepath.Join(s.proc, "stat"))
	}
	t := ts[0]
	// On Linux guest and guest_nice time is already counted in user and
	// nice: adding them (as TimesStat.Total does) would count it twice.
	// iowait is idle time spent waiting for I/O: the CPU was free.
	return cpuTimes{
		busy: t.User + t.Nice + t.System + t.Irq + t.Softirq + t.Steal,
		idle: t.Idle + t.Iowait,
	}, nil
}

// cpuBusy returns the busy fraction since the previous call; the first call
// measures over s.window.
func (s *Sampler) cpuBusy(ctx context.Context) (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasPrev {
		t0, err := s.readCPU(ctx)
		if err != nil {
			return 0, err
		}
		s.prev, s.hasPrev = t0, true
		select {
		case <-time.After(s.window):
		case <-ctx.Done():
			return 0, fmt.Errorf("cpu: %w", ctx.Err())
		}
	}
	now, err := s.readCPU(ctx)
	if err != nil {
		return 0, err
	}
	dBusy, dIdle := now.busy-s.prev.busy, now.idle-s.prev.idle
	switch {
	case dBusy < 0 || dIdle < 0:
		// Counters went backwards (a different /proc, a reset): start over.
		s.prev = now
		return s.lastCPU, nil
	case dBusy+dIdle == 0:
		// No tick since the previous call: keep the baseline, repeat the
		// last figure.
		return s.lastCPU, nil
	}
	s.prev = now
	s.lastCPU = round(math.Min(1, math.Max(0, dBusy/(dBusy+dIdle))))
	return s.lastCPU, nil
}

// diskUsage statfs's Docker's data root: under the host's root first, then
// as is, then "/".
func (s *Sampler) diskUsage(ctx context.Context) *disk.UsageStat {
	var candidates []string
	dockerRoot := *s.dockerRoot.Load()
	if s.root != "/" {
		candidates = append(candidates, filepath.Join(s.root, dockerRoot))
	}
	candidates = append(candidates, dockerRoot, "/")
	for _, p := range candidates {
		if u, err := disk.UsageWithContext(ctx, p); err == nil && u.Total > 0 {
			return u
		}
	}
	return nil
}

// uptime reads /proc/uptime of the host's /proc (so a fixture or the
// host's mounted /proc decides), falling back to sysinfo(2).
func (s *Sampler) uptime(ctx context.Context) uint64 {
	if b, err := os.ReadFile(filepath.Join(s.proc, "uptime")); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil && v >= 0 {
				return uint64(v)
			}
		}
	}
	if v, err := host.UptimeWithContext(ctx); err == nil {
		return v
	}
	return 0
}

// round keeps four decimals: heartbeats need no more, and JSON stays short.
func round(v float64) float64 { return math.Round(v*1e4) / 1e4 }
