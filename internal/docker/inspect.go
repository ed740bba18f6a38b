package docker

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Inspect reports the container's state and limits.
func (e *Engine) Inspect(ctx context.Context, containerID string) (protocol.InspectResult, error) {
	c, err := e.lookup(ctx, "inspect", containerID)
	if err != nil {
		return protocol.InspectResult{}, err
	}
	return inspectResult(containerID, c), nil
}

func inspectResult(containerID string, c container.InspectResponse) protocol.InspectResult {
	r := protocol.InspectResult{ContainerID: containerID, DockerID: c.ID}
	if c.Config != nil {
		r.Image = c.Config.Image
		r.TTY, r.OpenStdin = c.Config.Tty, c.Config.OpenStdin
	}
	if s := c.State; s != nil {
		r.State = string(s.Status)
		r.Running = s.Running
		r.ExitCode = s.ExitCode
		r.OOMKilled = s.OOMKilled
		r.Error = s.Error
		r.StartedAt = dockerTime(s.StartedAt)
		r.FinishedAt = dockerTime(s.FinishedAt)
		if s.Health != nil {
			r.Health = string(s.Health.Status)
		}
	}
	r.RestartCount = c.RestartCount
	if h := c.HostConfig; h != nil {
		r.Limits.NanoCPUs = h.NanoCPUs
		r.Limits.CPU = float64(h.NanoCPUs) / 1e9
		r.Limits.MemoryBytes = h.Memory
		if h.PidsLimit != nil {
			r.Limits.PidsLimit = *h.PidsLimit
		}
	}
	return r
}

// dockerTime renders Docker's RFC 3339 time in the protocol's form; Docker's
// zero time ("0001-01-01T00:00:00Z", never started) becomes "".
func dockerTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return ""
	}
	return protocol.Timestamp(t)
}

// List returns the containers this agent manages: those labelled
// lormas.managed=true and, when the agent has a node id, of this node (see
// policy.Ownership). ALLOW_UNMANAGED does not widen the list: it permits
// actions on other containers, it does not adopt them.
func (e *Engine) List(ctx context.Context) ([]protocol.InventoryItem, error) {
	if err := e.ready(ctx, "list containers"); err != nil {
		return nil, err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	cs, err := e.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", policy.LabelManaged+"="+policy.ManagedValue)),
	})
	if err != nil {
		return nil, dockerError(err, "list containers")
	}
	items := make([]protocol.InventoryItem, 0, len(cs))
	for _, c := range cs {
		if !e.owner.Owns(c.Labels) {
			continue
		}
		id := c.Labels[policy.LabelContainer]
		if id == "" && len(c.Names) > 0 {
			id = strings.TrimPrefix(c.Names[0], "/")
		}
		items = append(items, protocol.InventoryItem{
			ContainerID: id,
			DockerID:    c.ID,
			State:       string(c.State),
			Image:       c.Image,
			CreatedAt:   protocol.Timestamp(time.Unix(c.Created, 0)),
		})
	}
	return items, nil
}

// Stats takes one sample of the container's resource usage. CPU percent is
// computed as the docker CLI does (100 = one CPU busy), memory usage excludes
// the page cache that the kernel can reclaim (inactive_file).
func (e *Engine) Stats(ctx context.Context, containerID string) (protocol.StatsResult, error) {
	var s container.StatsResponse
	err := e.withContainer(ctx, "stats", containerID, func(c container.InspectResponse) error {
		// One sample with stream=false includes the previous CPU reading
		// (PreCPUStats) that the percentage needs; the one-shot variant does not.
		ctx, cancel := e.call(ctx, 0)
		defer cancel()
		resp, err := e.cli.ContainerStats(ctx, c.ID, false)
		if err != nil {
			return dockerError(err, "read stats of container %s", containerID)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			return dockerError(err, "read stats of container %s", containerID)
		}
		return nil
	})
	if err != nil {
		return protocol.StatsResult{}, err
	}
	return statsResult(containerID, s), nil
}

func statsResult(containerID string, s container.StatsResponse) protocol.StatsResult {
	r := protocol.StatsResult{
		ContainerID:      containerID,
		CPUPercent:       cpuPercent(s),
		MemoryUsageBytes: memoryUsage(s.MemoryStats),
		MemoryLimitBytes: s.MemoryStats.Limit,
		Pids:             s.PidsStats.Current,
		Timestamp:        protocol.Timestamp(s.Read),
	}
	for _, n := range s.Networks {
		r.NetworkRxBytes += n.RxBytes
		r.NetworkTxBytes += n.TxBytes
	}
	for _, b := range s.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(b.Op) {
		case "read":
			r.BlockReadBytes += b.Value
		case "write":
			r.BlockWriteBytes += b.Value
		}
	}
	return r
}

// cpuPercent is the docker CLI's formula: the container's share of the host's
// CPU time between the two readings, times the number of CPUs.
func cpuPercent(s container.StatsResponse) float64 {
	cpuDelta := float64(s.CPUStats.CPUUsage.TotalUsage) - float64(s.PreCPUStats.CPUUsage.TotalUsage)
	sysDelta := float64(s.CPUStats.SystemUsage) - float64(s.PreCPUStats.SystemUsage)
	cpus := float64(s.CPUStats.OnlineCPUs)
	if cpus == 0 {
		cpus = float64(len(s.CPUStats.CPUUsage.PercpuUsage))
	}
	if cpuDelta <= 0 || sysDelta <= 0 {
		return 0
	}
	return cpuDelta / sysDelta * cpus * 100
}

// memoryUsage subtracts the inactive page cache as the docker CLI does:
// total_inactive_file on cgroup v1, inactive_file on v2.
func memoryUsage(m container.MemoryStats) uint64 {
	cache, ok := m.Stats["total_inactive_file"]
	if !ok {
		cache = m.Stats["inactive_file"]
	}
	if cache < m.Usage {
		return m.Usage - cache
	}
	return m.Usage
}
