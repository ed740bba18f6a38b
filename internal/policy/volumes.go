package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// DefaultVolumeRoot is the default of VOLUME_ROOTS.
const DefaultVolumeRoot = "/var/lib/lormas/volumes"

// DefaultForbidden lists host paths no bind mount may equal, lie inside, or
// contain: the Docker and containerd sockets and state (control of them is
// root on the host), and the kernel's pseudo file systems. "/" is refused
// separately.
var DefaultForbidden = []string{
	"/proc",
	"/sys",
	"/dev",
	"/var/run/docker.sock",
	"/run/docker.sock",
	"/var/lib/docker",
	"/run/containerd",
	"/var/run/containerd",
}

// volumeNameRE is Docker's rule for volume names.
var volumeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// MountKind says how a volume's host side is mounted.
type MountKind int

// Mount kinds.
const (
	BindMount   MountKind = iota + 1 // a host directory under a volume root
	NamedVolume                      // a Docker named volume
)

// Mount is an approved volume host side.
type Mount struct {
	Kind MountKind
	// Source is the bind's host path with every symlink resolved (what to give
	// Docker, so a symlink swapped in later is not followed), or the volume's
	// name.
	Source string
}

// Volumes approves the host side of eggConfig.volumes.
//
// The agent resolves symlinks in its own mount namespace: when it runs in a
// container, mount the volume roots into it at the same paths, or symlinks
// inside them cannot be seen (paths are then only checked lexically).
type Volumes struct {
	roots     []string // clean, absolute, symlinks resolved
	shown     []string // roots as configured, for error messages
	forbidden []string // clean, absolute; plus their resolved forms
}

// NewVolumes returns the policy for the given roots (VOLUME_ROOTS). forbidden
// adds paths to DefaultForbidden, such as the unix socket of DOCKER_HOST. A
// root must be absolute and may not be "/" or a forbidden path.
func NewVolumes(roots []string, forbidden ...string) (*Volumes, error) {
	v := &Volumes{}
	for _, f := range slices.Concat(DefaultForbidden, forbidden) {
		if f == "" {
			continue
		}
		if !filepath.IsAbs(f) {
			return nil, fmt.Errorf("forbidden path %q is not absolute", f)
		}
		v.forbidden = append(v.forbidden, filepath.Clean(f))
		if r, err := resolve(filepath.Clean(f)); err == nil && r != filepath.Clean(f) {
			v.forbidden = append(v.forbidden, r)
		}
	}
	for _, r := range roots {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("volume root %q is not an absolute path", r)
		}
		clean := filepath.Clean(r)
		resolved, err := resolve(clean)
		if err != nil {
			return nil, fmt.Errorf("volume root %q: %w", r, err)
		}
		if clean == "/" || resolved == "/" {
			return nil, fmt.Errorf("volume root %q would allow the whole host file system", r)
		}
		// A root may contain a protected path (Check refuses that path and
		// its parents), but may not lie inside one.
		for _, f := range v.forbidden {
			if within(clean, f) || within(resolved, f) {
				return nil, fmt.Errorf("volume root %q lies inside the protected path %s", r, f)
			}
		}
		v.roots = append(v.roots, resolved)
		v.shown = append(v.shown, clean)
	}
	if len(v.roots) == 0 {
		return nil, errors.New("no volume root configured")
	}
	return v, nil
}

// Roots returns the configured roots, cleaned.
func (v *Volumes) Roots() []string { return slices.Clone(v.shown) }

// Check approves the host side of a volume. A host starting with "/" is a bind
// mount that must resolve to a volume root or inside one and stay clear of the
// forbidden paths (forbidden otherwise); a plain Docker volume name is a named
// volume; anything else is invalid.
func (v *Volumes) Check(host string) (Mount, error) {
	if !strings.HasPrefix(host, "/") {
		if volumeNameRE.MatchString(host) {
			return Mount{Kind: NamedVolume, Source: host}, nil
		}
		return Mount{}, protocol.Errorf(protocol.CodeInvalid,
			"volume host %q is neither an absolute path nor a volume name (letters, digits, '_', '.', '-', at least two characters)", host)
	}
	if strings.ContainsRune(host, 0) {
		return Mount{}, protocol.Errorf(protocol.CodeInvalid, "volume host path %q contains a NUL byte", host)
	}
	if slices.Contains(strings.Split(host, "/"), "..") {
		return Mount{}, v.refuse(host, "contains '..'")
	}
	clean := filepath.Clean(host)
	if clean == "/" {
		return Mount{}, v.refuse(host, "is the host's root directory")
	}
	resolved, err := resolve(clean)
	if err != nil {
		return Mount{}, v.refuse(host, fmt.Sprintf("cannot be resolved (%v)", err))
	}
	if f := v.forbiddenBy(clean, resolved); f != "" {
		return Mount{}, v.refuse(host, "touches the protected path "+f)
	}
	for _, root := range v.roots {
		// The root itself is allowed: it is what the operator declared
		// mountable (VOLUME_ROOTS=/data admits the seed's {"host": "/data"}),
		// and every directory below it is mountable anyway.
		if within(resolved, root) {
			return Mount{Kind: BindMount, Source: resolved}, nil
		}
	}
	if resolved != clean {
		return Mount{}, v.refuse(host, fmt.Sprintf("resolves to %s, which is not inside a volume root", resolved))
	}
	return Mount{}, v.refuse(host, "is not inside a volume root")
}

func (v *Volumes) refuse(host, why string) error {
	return protocol.Errorf(protocol.CodeForbidden,
		"volume host path %q %s; bind mounts must lie inside one of the volume roots (%s)",
		host, why, strings.Join(v.shown, ", "))
}

// forbiddenBy returns the forbidden path that any of paths equals, lies
// inside or contains, or "".
func (v *Volumes) forbiddenBy(paths ...string) string {
	for _, p := range paths {
		for _, f := range v.forbidden {
			if within(p, f) || within(f, p) {
				return f
			}
		}
	}
	return ""
}

// within reports whether p is dir or lies inside it (both clean, absolute).
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// resolve returns the clean absolute path p with the symlinks of its longest
// existing prefix resolved; the missing rest is appended unchanged (Docker
// creates missing bind sources as directories). An existing component that
// cannot be resolved, such as a dangling symlink, is an error: Docker would
// follow it.
func resolve(p string) (string, error) {
	existing, rest := p, ""
	for {
		_, err := os.Lstat(existing)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if existing == "/" {
			return p, nil
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
	resolved, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", err
	}
	return filepath.Join(resolved, rest), nil
}
