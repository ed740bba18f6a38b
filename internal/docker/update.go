package docker

import (
	"context"
	"math"
	"strings"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Update changes the container's CPU, memory and pids limits live. Fields
// left out (zero) stay as they are; memory sets the swap limit equal, as
// create does. A disk limit cannot change on an existing container: it is
// reported as a warning. Docker's refusals (a memory limit below current
// usage, for one) come back with Docker's message.
func (e *Engine) Update(ctx context.Context, containerID string, res *protocol.Resources) ([]string, error) {
	var warnings []string
	err := e.withContainer(ctx, "update", containerID, func(c container.InspectResponse) error {
		var err error
		warnings, err = e.update(ctx, c, containerID, res)
		return err
	})
	return warnings, err
}

func (e *Engine) update(ctx context.Context, c container.InspectResponse, containerID string, res *protocol.Resources) ([]string, error) {
	if res == nil {
		return nil, protocol.Errorf(protocol.CodeInvalid, "update container %s: resources is required", containerID)
	}
	var (
		upd      container.UpdateConfig
		warnings []string
		changed  bool
	)
	if res.CPU < 0 || math.IsNaN(res.CPU) {
		return nil, protocol.Errorf(protocol.CodeInvalid, "update container %s: resources.cpu must be positive", containerID)
	}
	if res.CPU > 0 {
		upd.NanoCPUs = int64(math.Round(res.CPU * 1e9))
		changed = true
	}
	mem, err := res.Memory.Bytes()
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInvalid, "update container %s: resources.memory: %w", containerID, err)
	}
	if mem > 0 {
		upd.Memory, upd.MemorySwap = mem, mem
		changed = true
	}
	if res.Pids > 0 {
		pids := res.Pids
		upd.PidsLimit = &pids
		changed = true
	}
	if disk, err := res.Disk.Bytes(); err == nil && disk > 0 {
		warnings = append(warnings, "disk limit not changed: Docker cannot change the disk limit of an existing container")
	}
	if !changed {
		if len(warnings) > 0 {
			return warnings, nil
		}
		return nil, protocol.Errorf(protocol.CodeInvalid, "update container %s: resources sets nothing to change (cpu, memory or pids)", containerID)
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	resp, err := e.cli.ContainerUpdate(ctx, c.ID, upd)
	if err != nil {
		err = dockerError(err, "update container %s", containerID)
		if strings.Contains(err.Error(), "current usage") {
			// The kernel refused a limit below what the container uses now:
			// a conflict with its state, not a fault of the engine.
			err = &protocol.Error{Code: protocol.CodeConflict, Err: err}
		}
		return warnings, err
	}
	e.log.Info("container updated", "containerId", containerID)
	return append(warnings, resp.Warnings...), nil
}
