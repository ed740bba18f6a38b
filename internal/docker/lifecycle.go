package docker

import (
	"context"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Start starts the container; a running one is left as it is.
func (e *Engine) Start(ctx context.Context, containerID string) error {
	c, err := e.lookup(ctx, "start", containerID)
	if err != nil {
		return err
	}
	if c.State != nil && c.State.Running && !c.State.Paused {
		return nil
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	if err := e.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return dockerError(err, "start container %s", containerID)
	}
	e.log.Info("container started", "containerId", containerID)
	return nil
}

// Stop stops the container, sending its stop signal and, after the grace
// period (timeout seconds, else the container's own or Docker's default),
// SIGKILL. A stopped container is left as it is.
func (e *Engine) Stop(ctx context.Context, containerID string, timeout *int) error {
	c, err := e.lookup(ctx, "stop", containerID)
	if err != nil {
		return err
	}
	if c.State != nil && !c.State.Running && !c.State.Restarting {
		return nil
	}
	grace := stopGrace(c, timeout)
	ctx, cancel := e.call(ctx, grace)
	defer cancel()
	if err := e.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: timeout}); err != nil {
		return dockerError(err, "stop container %s", containerID)
	}
	e.log.Info("container stopped", "containerId", containerID)
	return nil
}

// Restart stops (as Stop) and starts the container; a stopped one is started.
func (e *Engine) Restart(ctx context.Context, containerID string, timeout *int) error {
	c, err := e.lookup(ctx, "restart", containerID)
	if err != nil {
		return err
	}
	grace := stopGrace(c, timeout)
	ctx, cancel := e.call(ctx, grace)
	defer cancel()
	if err := e.cli.ContainerRestart(ctx, c.ID, container.StopOptions{Timeout: timeout}); err != nil {
		return dockerError(err, "restart container %s", containerID)
	}
	e.log.Info("container restarted", "containerId", containerID)
	return nil
}

// Kill sends signal (default SIGKILL) to a running container.
func (e *Engine) Kill(ctx context.Context, containerID, signal string) error {
	c, err := e.lookup(ctx, "kill", containerID)
	if err != nil {
		return err
	}
	if c.State != nil && !c.State.Running {
		return protocol.Errorf(protocol.CodeConflict, "kill container %s: the container is not running", containerID)
	}
	if signal == "" {
		signal = "SIGKILL"
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	if err := e.cli.ContainerKill(ctx, c.ID, signal); err != nil {
		return dockerError(err, "kill container %s with %s", containerID, signal)
	}
	e.log.Info("container killed", "containerId", containerID, "signal", signal)
	return nil
}

// Delete force-removes the container, keeping its named volumes and bind
// data. A missing container is reported as alreadyAbsent, not as an error.
func (e *Engine) Delete(ctx context.Context, containerID string) (alreadyAbsent bool, err error) {
	c, err := e.lookup(ctx, "delete", containerID)
	if protocol.CodeOf(err) == protocol.CodeNotFound {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	err = e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: false})
	switch {
	case isNotFound(err):
		return true, nil
	case err != nil:
		return false, dockerError(err, "delete container %s", containerID)
	}
	e.log.Info("container deleted", "containerId", containerID)
	return false, nil
}

// stopGrace is the time a stop may take: the asked timeout, else the
// container's stop timeout, else Docker's default.
func stopGrace(c container.InspectResponse, timeout *int) time.Duration {
	secs := defaultStopGrace
	switch {
	case timeout != nil:
		secs = *timeout
	case c.Config != nil && c.Config.StopTimeout != nil:
		secs = *c.Config.StopTimeout
	}
	if secs < 0 {
		secs = defaultStopGrace
	}
	return time.Duration(secs) * time.Second
}
