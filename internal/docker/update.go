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
func (e *Engine) Update(ctx context.Context, containerID string, l protocol.Limits) ([]string, error) {
	var warnings []string
	err := e.withContainer(ctx, "update", containerID, func(c container.InspectResponse) error {
		var err error
		warnings, err = e.update(ctx, c, containerID, l)
		return err
	})
	return warnings, err
}

func (e *Engine) update(ctx context.Context, c container.InspectResponse, containerID string, l protocol.Limits) ([]string, error) {
	var (
		upd      container.UpdateConfig
		warnings []string
		changed  bool
	)
	if l.CPU > 0 {
		upd.NanoCPUs = int64(math.Round(l.CPU * 1e9))
		changed = true
	}
	if l.Memory > 0 {
		upd.Memory, upd.MemorySwap = l.Memory, l.Memory
		changed = true
	}
	if l.Pids > 0 {
		pids := l.Pids
		upd.PidsLimit = &pids
		changed = true
	}
	if l.Disk > 0 {
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
