package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// hasBind reports whether a create asks for a bind mount.
func hasBind(egg *protocol.EggConfig) bool {
	if egg == nil {
		return false
	}
	for _, v := range egg.Volumes {
		if strings.HasPrefix(v.Host, "/") {
			return true
		}
	}
	return false
}

// ensureBinds makes each bind source of spec: a real directory directly under
// its volume root (policy.Volumes.Ensure). When the agent runs as a user that
// may not write the root (uid 65532 in its container, the root made by Docker
// or the kubelet as root's), and it runs in a Docker container of this
// daemon, the daemon makes the directory in the agent's own container, where
// the root is mounted at the same path, owned by the agent's user; Ensure
// then checks it again.
func (e *Engine) ensureBinds(ctx context.Context, spec *createSpec) error {
	for _, m := range spec.Binds {
		err := e.volumes.Ensure(m)
		if self := e.selfContainer(); errors.Is(err, policy.ErrRootNotWritable) && self != "" {
			if derr := e.mkdirByDaemon(ctx, self, m); derr != nil {
				return fmt.Errorf("create container %s: %w; the Docker Engine could not make it either: %v", spec.Name, err, derr)
			}
			err = e.volumes.Ensure(m)
		}
		if err != nil {
			return fmt.Errorf("create container %s: %w", spec.Name, err)
		}
	}
	return nil
}

// mkdirByDaemon has the daemon create m.Name in m.Root of the agent's own
// container (a one-directory archive, as docker cp extracts it; the root is
// a writable bind mount there, so a read-only root file system is no
// obstacle). The directory gets mode 0755 and the agent's uid and gid. The
// daemon refuses to replace anything but a directory.
func (e *Engine) mkdirByDaemon(ctx context.Context, self string, m policy.Mount) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: m.Name + "/", Mode: 0o755,
		Uid: os.Geteuid(), Gid: os.Getegid(), ModTime: time.Now(),
	}); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	if err := e.cli.CopyToContainer(ctx, self, m.Root, &buf, container.CopyToContainerOptions{}); err != nil {
		return dockerError(err, "create %s in the agent's own container", m.Source)
	}
	e.log.Info("bind source created by the Docker Engine in the agent's own container", "path", m.Source, "container", self[:12])
	return nil
}
