//go:build !linux

package policy

import (
	"errors"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// ErrRootNotWritable is wrapped by Ensure's error when the agent's user may
// not create the bind directory in its root.
var ErrRootNotWritable = errors.New("the agent's user may not create directories in the volume root")

// Ensure refuses every bind mount: creating bind sources without following
// symlinks is implemented for Linux only.
func (v *Volumes) Ensure(m Mount) error {
	if m.Kind != BindMount {
		return nil
	}
	return protocol.Errorf(protocol.CodeForbidden, "bind mounts are supported on Linux only")
}

// Audit has nothing to say off Linux.
func (v *Volumes) Audit() []string { return nil }
