package docker

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/volume"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Create pulls the image (per pullPolicy) and creates the container named
// p.ContainerID. A container of that name created from the identical
// request is success with its id; any other container of that name is a
// conflict. Warnings list what was not applied as asked.
func (e *Engine) Create(ctx context.Context, p protocol.CreateParams, progress func(stage, detail string)) (protocol.CreateResult, []string, error) {
	id := p.ContainerID
	// The name is part of API URLs: the same check lookup makes for every
	// other operation.
	if err := protocol.ValidateContainerID(id); err != nil {
		return protocol.CreateResult{}, nil, err
	}
	if hasBind(&p.Egg) {
		if err := e.checkRoots(ctx); err != nil {
			return protocol.CreateResult{}, nil, protocol.Errorf(protocol.CodeUnavailable,
				"create container %s: cannot check yet whether the agent sees the volume roots as Docker does: %w", id, err)
		}
	}
	spec, err := translate(p, translateOptions{Owner: e.owner, Volumes: e.volumes, PidsLimit: e.pidsLimit, LogOpts: e.logOpts})
	if err != nil {
		return protocol.CreateResult{}, nil, fmt.Errorf("create container %s: %w", id, err)
	}

	if existing, ok, err := e.existing(ctx, id, spec.Hash); err != nil || ok {
		return protocol.CreateResult{ContainerID: existing}, nil, err
	}
	if err := e.ensureBinds(ctx, spec); err != nil {
		return protocol.CreateResult{}, nil, err
	}

	var warnings []string
	if spec.Disk > 0 {
		support, err := e.storageSupport(ctx)
		if err != nil {
			return protocol.CreateResult{}, nil, err
		}
		w, err := spec.limitDisk(support, e.diskMode)
		if err != nil {
			return protocol.CreateResult{}, nil, err
		}
		warnings = append(warnings, w...)
	}

	w, err := e.ensureImage(ctx, spec.Config.Image, p.Egg.PullPolicy, progress)
	if err != nil {
		return protocol.CreateResult{}, nil, fmt.Errorf("create container %s: %w", id, err)
	}
	warnings = append(warnings, w...)

	for _, name := range spec.Volumes {
		if err := e.createVolume(ctx, name, id); err != nil {
			return protocol.CreateResult{}, warnings, err
		}
	}

	gen := e.index.generation()
	dockerID, w, err := e.createContainer(ctx, spec)
	if err != nil {
		return protocol.CreateResult{}, warnings, err
	}
	warnings = append(warnings, w...)
	// The agent's own labels: its container. Start and the rest find it in
	// the index without an inspect.
	e.index.record(gen, id, entryOf(container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: dockerID}, Config: spec.Config}))
	e.log.Info("container created", "containerId", id, "dockerId", dockerID, "image", spec.Config.Image)
	return protocol.CreateResult{ContainerID: dockerID}, warnings, nil
}

// existing checks for a container named id: ok with its Docker id when this
// agent created it from the request hashed as hash, a conflict for any other.
func (e *Engine) existing(ctx context.Context, id, hash string) (dockerID string, ok bool, err error) {
	if err := e.ready(ctx, "create container %s", id); err != nil {
		return "", false, err
	}
	ictx, cancel := e.call(ctx, 0)
	defer cancel()
	gen := e.index.generation()
	c, err := e.cli.ContainerInspect(ictx, id)
	switch {
	case isNotFound(err) || err == nil && !namedAs(c, id):
		return "", false, nil
	case err != nil:
		return "", false, dockerError(err, "create container %s: look for an existing container", id)
	}
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	if !e.owner.Owns(labels) {
		return "", false, protocol.Errorf(protocol.CodeConflict,
			"create container %s: a container with this name exists and is not managed by this agent", id)
	}
	if labels[policy.LabelSpec] != hash {
		return "", false, protocol.Errorf(protocol.CodeConflict,
			"create container %s: the container already exists with a different configuration; delete it first", id)
	}
	e.index.record(gen, id, entryOf(c))
	return c.ID, true, nil
}

// createVolume creates a named volume with the agent's labels. Docker answers
// for an existing volume of that name with the existing volume: one of this
// agent's may be shared between its containers, but a volume the agent did
// not create (another tenant's data, the host's own) is forbidden unless
// ALLOW_UNMANAGED. Volumes are never deleted by the agent.
func (e *Engine) createVolume(ctx context.Context, name, containerID string) error {
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	v, err := e.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: e.owner.Labels(containerID)})
	if err != nil {
		return dockerError(err, "create container %s: create volume %s", containerID, name)
	}
	if !e.owner.AllowUnmanaged && !e.owner.Owns(v.Labels) {
		return protocol.Errorf(protocol.CodeForbidden,
			"create container %s: volume %s exists and is not managed by this agent; set ALLOW_UNMANAGED=true to allow it", containerID, name)
	}
	return nil
}

// createContainer creates the container. When the daemon still refuses the
// disk limit (overlay2 on xfs without pquota), warn mode creates it again
// without the limit.
func (e *Engine) createContainer(ctx context.Context, spec *createSpec) (string, []string, error) {
	cctx, cancel := e.call(ctx, 0)
	defer cancel()
	resp, err := e.cli.ContainerCreate(cctx, spec.Config, spec.Host, nil, nil, spec.Name)
	if err != nil && spec.Host.StorageOpt != nil && isStorageOptRefused(err) {
		if e.diskMode == DiskLimitStrict {
			return "", nil, protocol.Errorf(protocol.CodeInvalid,
				"create container %s: resources.disk cannot be enforced: %v (DISK_LIMIT_MODE=strict)", spec.Name, err)
		}
		e.log.Warn("disk limit refused by the storage driver, creating without it", "containerId", spec.Name, "err", err)
		spec.Host.StorageOpt = nil
		warning := "disk limit not applied: the storage driver refused it: " + err.Error()
		id, warnings, err := e.createContainer(ctx, spec)
		return id, append([]string{warning}, warnings...), err
	}
	if err != nil {
		return "", nil, dockerError(err, "create container %s", spec.Name)
	}
	return resp.ID, resp.Warnings, nil
}
