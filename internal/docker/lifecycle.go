package docker

import (
	"context"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Start starts the container; a running one is left as it is.
func (e *Engine) Start(ctx context.Context, containerID string) error {
	err := e.withContainer(ctx, "start", containerID, func(c container.InspectResponse) error {
		if c.State != nil && c.State.Running && !c.State.Paused {
			return nil
		}
		ctx, cancel := e.call(ctx, 0)
		defer cancel()
		// Docker answers 304 (no error) for a running container.
		if err := e.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			return dockerError(err, "start container %s", containerID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.log.Info("container started", "containerId", containerID)
	return nil
}

// Stop stops the container, sending its stop signal and, after the grace
// period (timeout seconds, else the container's own or Docker's default),
// SIGKILL. A stopped container is left as it is.
func (e *Engine) Stop(ctx context.Context, containerID string, timeout *int) error {
	err := e.withContainer(ctx, "stop", containerID, func(c container.InspectResponse) error {
		if c.State != nil && !c.State.Running && !c.State.Restarting {
			return nil
		}
		ctx, cancel := e.call(ctx, stopGrace(c, timeout))
		defer cancel()
		// Docker answers 304 (no error) for a stopped container.
		if err := e.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: timeout}); err != nil {
			return dockerError(err, "stop container %s", containerID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.log.Info("container stopped", "containerId", containerID)
	return nil
}

// Restart stops (as Stop) and starts the container; a stopped one is started.
func (e *Engine) Restart(ctx context.Context, containerID string, timeout *int) error {
	err := e.withContainer(ctx, "restart", containerID, func(c container.InspectResponse) error {
		ctx, cancel := e.call(ctx, stopGrace(c, timeout))
		defer cancel()
		if err := e.cli.ContainerRestart(ctx, c.ID, container.StopOptions{Timeout: timeout}); err != nil {
			return dockerError(err, "restart container %s", containerID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.log.Info("container restarted", "containerId", containerID)
	return nil
}

// Kill sends signal (default SIGKILL) to a running container.
func (e *Engine) Kill(ctx context.Context, containerID, signal string) error {
	if signal == "" {
		signal = "SIGKILL"
	}
	err := e.withContainer(ctx, "kill", containerID, func(c container.InspectResponse) error {
		if c.State != nil && !c.State.Running {
			return errNotRunning(containerID)
		}
		ctx, cancel := e.call(ctx, 0)
		defer cancel()
		err := e.cli.ContainerKill(ctx, c.ID, signal)
		switch {
		case err == nil:
			return nil
		case c.State == nil && errorCode(err) == protocol.CodeConflict:
			// From the index, without the state: Docker's 409 "is not running".
			return errNotRunning(containerID)
		}
		return dockerError(err, "kill container %s with %s", containerID, signal)
	})
	if err != nil {
		return err
	}
	e.log.Info("container killed", "containerId", containerID, "signal", signal)
	return nil
}

func errNotRunning(containerID string) error {
	return protocol.Errorf(protocol.CodeConflict, "kill container %s: the container is not running", containerID)
}

// Delete force-removes the container, keeping its named volumes and bind
// data. A missing container is reported as alreadyAbsent, not as an error.
func (e *Engine) Delete(ctx context.Context, containerID string) (alreadyAbsent bool, err error) {
	remove := func(c container.InspectResponse) error {
		ctx, cancel := e.call(ctx, 0)
		defer cancel()
		e.index.forget(c.ID)
		err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: false})
		if err != nil {
			return dockerError(err, "delete container %s", containerID)
		}
		return nil
	}
	// An indexed container that is gone may have been replaced under its
	// name: only an inspect by name can tell "already absent".
	if c, ok := e.indexed(ctx, containerID); ok {
		err := remove(c)
		if err == nil {
			e.log.Info("container deleted", "containerId", containerID)
		}
		if protocol.CodeOf(err) != protocol.CodeNotFound {
			return false, err
		}
	}
	c, err := e.lookup(ctx, "delete", containerID)
	if protocol.CodeOf(err) == protocol.CodeNotFound {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	err = remove(c)
	switch {
	case protocol.CodeOf(err) == protocol.CodeNotFound:
		return true, nil
	case err != nil:
		return false, err
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
