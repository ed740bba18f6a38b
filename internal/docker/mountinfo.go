package docker

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/lormas/lormas-agent/internal/mountinfo"
)

// mountEntry is one line of a /proc/<pid>/mountinfo file.
type mountEntry = mountinfo.Entry

// readMountinfo parses the mount table at path.
func readMountinfo(path string) ([]mountEntry, error) { return mountinfo.Read(path) }

// covering returns the mount that holds path (mountinfo.Covering).
func covering(mounts []mountEntry, path string) *mountEntry { return mountinfo.Covering(mounts, path) }

// within reports whether p is dir or lies inside it (both clean, absolute).
func within(p, dir string) bool { return mountinfo.Within(p, dir) }

// dockerFileRE matches the source of the files Docker bind-mounts into every
// container it runs: <data-root>/containers/<id>/hostname|hosts|resolv.conf
// (the data root may be a mount of its own, so the source may start at
// /containers).
var dockerFileRE = regexp.MustCompile(`(?:^|/)containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$`)

// containerIDFromMounts returns the id of the Docker container whose files
// are mounted at /etc/hostname, /etc/hosts or /etc/resolv.conf, or "".
func containerIDFromMounts(mounts []mountEntry) string {
	for _, m := range mounts {
		switch m.Point {
		case "/etc/hostname", "/etc/hosts", "/etc/resolv.conf":
			if sub := dockerFileRE.FindStringSubmatch(m.Root); sub != nil {
				return sub[1]
			}
		}
	}
	return ""
}

// containerLocalFS lists file system types that belong to a container itself,
// not to a host directory: a mount of one of them whole ("/") at a root's
// path shows nothing of the host.
var containerLocalFS = map[string]bool{
	"tmpfs": true, "ramfs": true, "overlay": true, "aufs": true, "fuse.fuse-overlayfs": true,
	"proc": true, "sysfs": true, "devpts": true, "mqueue": true, "cgroup": true, "cgroup2": true,
}

// consistentMount reports whether a mount looks like a host directory mounted
// at the same path: its source path (Root, relative to its file system) is a
// tail of its mount point, or it is a whole host file system.
func consistentMount(m *mountEntry) bool {
	if m.Root == "/" {
		return !containerLocalFS[m.FSType]
	}
	return strings.HasSuffix(filepath.Clean(m.Point), filepath.Clean(m.Root))
}

// mountinfoVerdict judges from the agent's own mount table whether a root
// (a path in the agent's namespace) is a host directory mounted at the same
// path. It cannot see host paths, only the path inside the mounted file
// system, so it accepts a mount whose mount point ends with that path: an
// identical mount always passes; a different directory passes only when its
// path inside its file system happens to be a tail of the root's path.
func mountinfoVerdict(root string, mounts []mountEntry) (bool, string) {
	m := covering(mounts, root)
	if m == nil || filepath.Clean(m.Point) == "/" {
		return false, "is not mounted into the agent's container at the same path"
	}
	if !consistentMount(m) {
		return false, fmt.Sprintf("is mounted into the agent's container from another directory (%s on a %s file system), not from the same path", m.Root, m.FSType)
	}
	for i := range mounts {
		s := &mounts[i]
		p := filepath.Clean(s.Point)
		if s != m && p != filepath.Clean(m.Point) && within(p, root) && !consistentMount(s) {
			return false, fmt.Sprintf("has %s mounted over part of it from elsewhere in the agent's container", p)
		}
	}
	return true, ""
}

// sameMount reports whether two mount tables hold path in the very same
// mount (mount ids are unique across namespaces: equal ids at equal mount
// points are one mount seen from one namespace).
func sameMount(a, b []mountEntry, path string) bool {
	ma, mb := covering(a, path), covering(b, path)
	return ma != nil && mb != nil && ma.ID == mb.ID && ma.Point == mb.Point && ma.Root == mb.Root
}
