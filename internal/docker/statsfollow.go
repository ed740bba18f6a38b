package docker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// FollowStats samples a managed, running container's resource usage every
// p.Interval and hands each sample (without its command id) to emit (which blocks
// while the server is slow), until the container stops (nil) or ctx ends
// (nil) or emit fails (its error). It returns the number of samples sent.
//
// Each sample is a one-shot reading of the engine's counters; CPU is the
// container's CPU time over the interval between two readings, in CPUs
// (the first sample has no earlier reading: 0). Memory is usage without
// the page cache; its limit is the container's, or the host's memory.
func (e *Engine) FollowStats(ctx context.Context, p protocol.StatsParams, emit func(protocol.StatsSample) error) (int, error) {
	if p.Interval <= 0 {
		return 0, protocol.Errorf(protocol.CodeInvalid, "stats interval must be positive, got %s", p.Interval)
	}
	c, err := e.consoleTarget(ctx, "stats of", p.ContainerID)
	if err != nil {
		return 0, err
	}
	hostMem := e.hostMemory(ctx)
	ticks, stopTicks := e.newStatsTicker(p.Interval)
	defer stopTicks()
	var prev *container.StatsResponse
	sent := 0
	for {
		s, running, err := e.statsOnce(ctx, c.ID)
		switch {
		case ctx.Err() != nil:
			return sent, nil
		case err != nil:
			if !e.stillRunning(ctx, c.ID) {
				return sent, nil
			}
			return sent, dockerError(err, "read stats of container %s", p.ContainerID)
		case !running:
			return sent, nil
		}
		sample := statsSample(p.ContainerID, s, prev, hostMem)
		if err := emit(sample); err != nil {
			return sent, err
		}
		sent++
		prev = &s
		select {
		case <-ticks:
		case <-ctx.Done():
			return sent, nil
		}
	}
}

// newStatsTicker returns the ticks that pace a followed stats stream.
func (e *Engine) newStatsTicker(interval time.Duration) (<-chan time.Time, func()) {
	if e.statsTicker != nil {
		return e.statsTicker(interval)
	}
	t := time.NewTicker(interval)
	return t.C, t.Stop
}

// statsOnce reads one sample; running is false when the engine answered
// with the empty sample of a container that is not running.
func (e *Engine) statsOnce(ctx context.Context, dockerID string) (container.StatsResponse, bool, error) {
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	var s container.StatsResponse
	resp, err := e.cli.ContainerStatsOneShot(ctx, dockerID)
	if err != nil {
		return s, false, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, false, err
	}
	return s, !s.Read.IsZero(), nil
}

func (e *Engine) stillRunning(ctx context.Context, dockerID string) bool {
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	c, err := e.cli.ContainerInspect(ctx, dockerID)
	if err != nil {
		return !isNotFound(err)
	}
	return c.State != nil && c.State.Running
}

// hostMemory is the engine host's memory (0 when unknown).
func (e *Engine) hostMemory(ctx context.Context) uint64 {
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	info, err := e.cli.Info(ctx)
	if err != nil || info.MemTotal <= 0 {
		return 0
	}
	return uint64(info.MemTotal)
}

func statsSample(containerID string, s container.StatsResponse, prev *container.StatsResponse, hostMem uint64) protocol.StatsSample {
	r := statsResult(containerID, s)
	out := protocol.StatsSample{
		ContainerID:      containerID,
		MemoryBytes:      r.MemoryUsageBytes,
		MemoryLimitBytes: r.MemoryLimitBytes,
		NetRxBytes:       r.NetworkRxBytes,
		NetTxBytes:       r.NetworkTxBytes,
		BlockReadBytes:   r.BlockReadBytes,
		BlockWriteBytes:  r.BlockWriteBytes,
		Pids:             r.Pids,
		Timestamp:        r.Timestamp,
	}
	if hostMem > 0 && (out.MemoryLimitBytes == 0 || out.MemoryLimitBytes > hostMem) {
		out.MemoryLimitBytes = hostMem
	}
	if prev != nil {
		out.CPU = cpuBetween(*prev, s)
	}
	return out
}

// cpuBetween is the CPUs the container used between two readings: its CPU
// time over the host's (times the host's CPUs, as the docker CLI computes
// it), or over the wall-clock time when the host's is not reported.
func cpuBetween(prev, cur container.StatsResponse) float64 {
	used := float64(cur.CPUStats.CPUUsage.TotalUsage) - float64(prev.CPUStats.CPUUsage.TotalUsage)
	if used <= 0 {
		return 0
	}
	sys := float64(cur.CPUStats.SystemUsage) - float64(prev.CPUStats.SystemUsage)
	cpus := float64(cur.CPUStats.OnlineCPUs)
	if cpus == 0 {
		cpus = float64(len(cur.CPUStats.CPUUsage.PercpuUsage))
	}
	if sys > 0 && cpus > 0 {
		return used / sys * cpus
	}
	if wall := cur.Read.Sub(prev.Read); wall > 0 {
		return used / float64(wall.Nanoseconds())
	}
	return 0
}
