package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/lormas/lormas-agent/internal/mountinfo"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// DefaultVolumeRoot is the default of VOLUME_ROOTS.
const DefaultVolumeRoot = "/var/lib/lormas/volumes"

// DefaultForbidden lists host paths no bind mount may equal, lie inside, or
// contain: the Docker and containerd sockets and state (control of them is
// root on the host: whoever can edit another container's configuration in
// Docker's data root runs what it likes as root), and the kernel's pseudo
// file systems. "/" is refused separately. The Docker layer adds the
// daemon's actual data root and the agent's state directory (Protect).
var DefaultForbidden = []string{
	"/proc",
	"/sys",
	"/dev",
	"/var/run/docker.sock",
	"/run/docker.sock",
	"/var/lib/docker",
	"/var/lib/containerd",
	"/run/containerd",
	"/var/run/containerd",
}

// volumeNameRE is Docker's rule for volume names.
var volumeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// bindNameRE is the rule for the one directory of a bind source below its
// root: Docker's container name rule, so never "." or "..", never hidden.
var bindNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// maxBindName is the longest directory name (bytes) most file systems take.
const maxBindName = 255

// exampleName completes the example bind source in refusals.
const exampleName = "web-1-data"

// MountKind says how a volume's host side is mounted.
type MountKind int

// Mount kinds.
const (
	BindMount   MountKind = iota + 1 // one directory directly under a volume root
	NamedVolume                      // a Docker named volume
)

// Mount is an approved volume host side.
type Mount struct {
	Kind MountKind
	// Source is the bind's host path, Root + "/" + Name (what Docker is
	// given), or the named volume's name.
	Source string
	// Root is the bind's volume root with its symlinks resolved at start;
	// Name is the directory directly under it. Both empty for a named volume.
	Root, Name string
}

// Root is one configured volume root.
type Root struct {
	Path     string // as configured, cleaned: what operators and servers write
	Resolved string // with the symlinks of its existing part resolved at start
}

// RootStatus is what the agent knows about seeing a root at Docker's path.
type RootStatus struct {
	Root
	Checked bool   // false until the agent looked
	Visible bool   // the agent sees the root at the same path as Docker
	Problem string // when checked and not visible: the sentence with the fix
}

// visibility of a root to the agent.
type visibility int

const (
	unchecked visibility = iota
	visible
	hidden
)

type rootState struct {
	Root
	vis    visibility
	reason string // hidden: completes "volume root <path> ..."
	// inside, when set, is the protected path (with what it is) that the
	// root lies in: binds under it are refused whatever its visibility.
	inside string
}

// protected is one path no bind source may equal, lie inside or contain.
type protected struct {
	path string // clean, absolute
	what string // for messages, e.g. "Docker's data root"; may be empty
}

func (p protected) String() string {
	if p.what == "" {
		return p.path
	}
	return p.path + " (" + p.what + ")"
}

// Volumes approves the host side of eggConfig.volumes.
//
// A bind source is exactly <root>/<name>: one directory directly under a
// volume root, name a single safe component. The roots themselves and
// anything nested deeper are refused, and roots may not nest in each other.
// The agent creates <root>/<name> itself, relative to an open descriptor of
// the root and without following symlinks, refuses anything there that is not
// a real directory, and Docker is given the path as a mount that it must not
// create (Ensure; internal/docker uses HostConfig.Mounts, not Binds).
//
// Why this holds against the workloads, not only against the server's
// strings: Docker resolves a bind source again at every start and restart,
// also when its restart policy restarts a container without the agent. The
// path it resolves, <root>/<name>, passes only through host directories no
// workload can write: the root is never bound into any container, nor is
// anything above it (roots lie outside the protected paths and other roots),
// so no workload can add, remove, rename or swap an entry of the root. What a
// workload can write is the inside of its own <root>/<name>; a symlink it
// plants there is seen only in its own mount namespace and is never on the
// way to a bind source, because a nested path (<root>/<name>/link) is never
// a bind source. A symlink or file planted at <root>/<name> by someone on the
// host is refused by Ensure. What remains is the host itself: a root and its
// parents must not be writable by anyone but root and the agent, and no
// other host user may enter a root, where a root workload can leave setuid
// programs and device nodes (Ensure makes missing roots 0700; Audit warns).
// The daemon's own state is never a bind source (Protect).
//
// The agent must see each root at the path Docker sees it, or its checks
// would look at another directory. Roots start unchecked; the Docker layer
// marks each one visible or hidden (MarkVisible, MarkHidden): binds under an
// unchecked root are unavailable, under a hidden root forbidden, with the
// mount to add.
type Volumes struct {
	roots []*rootState

	mu        sync.RWMutex // guards forbidden and the state of roots
	forbidden []protected  // plus their resolved forms
	log       *slog.Logger

	mountTable string // where Audit reads the mount options (mountinfo.Self)
}

// NewVolumes returns the policy for the given roots (VOLUME_ROOTS). forbidden
// adds paths to DefaultForbidden, such as the unix socket of DOCKER_HOST. A
// root must be absolute and may not be "/", lie inside a forbidden path, or
// nest with another root. It touches nothing; roots missing on the host are
// created at their first use.
func NewVolumes(roots []string, forbidden ...string) (*Volumes, error) {
	v := &Volumes{log: slog.New(slog.DiscardHandler), mountTable: mountinfo.Self}
	for _, f := range slices.Concat(DefaultForbidden, forbidden) {
		if f == "" {
			continue
		}
		if !filepath.IsAbs(f) {
			return nil, fmt.Errorf("forbidden path %q is not absolute", f)
		}
		v.forbidden = append(v.forbidden, protectedForms(f, "")...)
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
			if within(clean, f.path) || within(resolved, f.path) {
				return nil, fmt.Errorf("volume root %q lies inside the protected path %s", r, f)
			}
		}
		// A root inside another would be a directory some workload can be
		// given (<outer>/<name>), and so on the way to the inner root's binds.
		for _, o := range v.roots {
			if nests(clean, resolved, o.Path, o.Resolved) {
				return nil, fmt.Errorf("volume roots %s and %s nest: a root may not lie inside another (a workload bound under the outer one could reach the inner one's bind sources)", o.Path, clean)
			}
		}
		v.roots = append(v.roots, &rootState{Root: Root{Path: clean, Resolved: resolved}})
	}
	if len(v.roots) == 0 {
		return nil, errors.New("no volume root configured")
	}
	return v, nil
}

// nests reports whether a root (path a, resolved ra) and another (b, rb) are
// equal or lie one inside the other.
func nests(a, ra, b, rb string) bool {
	for _, x := range []string{a, ra} {
		for _, y := range []string{b, rb} {
			if within(x, y) || within(y, x) {
				return true
			}
		}
	}
	return false
}

// protectedForms returns p, clean, and its resolved form when that differs.
func protectedForms(p, what string) []protected {
	clean := filepath.Clean(p)
	out := []protected{{path: clean, what: what}}
	if r, err := resolve(clean); err == nil && r != clean {
		out = append(out, protected{path: r, what: what})
	}
	return out
}

// Protect adds host paths that no bind source may equal, lie inside or
// contain, such as the daemon's data root (known once it answers) or the
// agent's state directory; what says what they are, for messages. Empty
// paths are skipped; a relative one is an error.
//
// A root that lies inside a protected path is refused from then on (binds
// under it are forbidden, saying why) and Protect returns an error naming
// it. A root that contains a protected path stays usable: bind sources are
// single directories directly under the root, so the only ones at stake are
// <root>/<first component of the path>, and Check refuses them by name; a
// warning says so.
func (v *Volumes) Protect(what string, paths ...string) error {
	var errs []error
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, p := range paths {
		if p == "" {
			continue
		}
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("protected path %q (%s) is not absolute", p, what))
			continue
		}
		for _, f := range protectedForms(p, what) {
			if slices.ContainsFunc(v.forbidden, func(o protected) bool { return o.path == f.path }) {
				continue // known: said already
			}
			v.forbidden = append(v.forbidden, f)
			for _, r := range v.roots {
				switch {
				case within(r.Path, f.path) || within(r.Resolved, f.path):
					if r.inside == "" {
						r.inside = f.String()
						errs = append(errs, fmt.Errorf("volume root %s lies inside the protected path %s: bind mounts under it are refused; choose a root outside it", r.Path, f))
					}
				case within(f.path, r.Path) || within(f.path, r.Resolved):
					v.log.Warn("volume root contains a protected path: bind mounts of it are refused",
						"root", r.Path, "protected", f.String(), "refused", r.Path+"/"+firstComponent(f.path, r))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// firstComponent returns the name directly under root on the way to p,
// which lies inside root.
func firstComponent(p string, r *rootState) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(p, r.Resolved), "/")
	if within(p, r.Path) {
		rest = strings.TrimPrefix(strings.TrimPrefix(p, r.Path), "/")
	}
	first, _, _ := strings.Cut(rest, "/")
	return first
}

// SetLogger sets where Ensure logs what it creates (default: nowhere).
func (v *Volumes) SetLogger(l *slog.Logger) {
	if l != nil {
		v.log = l
	}
}

// Roots returns the configured roots.
func (v *Volumes) Roots() []Root {
	out := make([]Root, len(v.roots))
	for i, r := range v.roots {
		out[i] = r.Root
	}
	return out
}

// Status returns what is known about each root's visibility.
func (v *Volumes) Status() []RootStatus {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]RootStatus, len(v.roots))
	for i, r := range v.roots {
		out[i] = RootStatus{Root: r.Root, Checked: r.vis != unchecked, Visible: r.vis == visible}
		switch {
		case r.inside != "":
			out[i].Visible = false
			out[i].Problem = insideProblem(r)
		case r.vis == hidden:
			out[i].Problem = hiddenProblem(r)
		}
	}
	return out
}

// MarkVisible records that the agent sees the root at path (Root.Path) at
// the same path as Docker does.
func (v *Volumes) MarkVisible(path string) error {
	return v.mark(path, visible, "")
}

// MarkHidden records that the agent cannot see the root at path (Root.Path)
// at the same path as Docker; reason completes the sentence "volume root
// <path> ...", e.g. "is not mounted into the agent's container at the same
// path". Binds under it are then refused with the mount to add.
func (v *Volumes) MarkHidden(path, reason string) error {
	if reason == "" {
		reason = "is not visible to the agent at the same path"
	}
	return v.mark(path, hidden, reason)
}

func (v *Volumes) mark(path string, vis visibility, reason string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.roots {
		if r.Path == path {
			r.vis, r.reason = vis, reason
			return nil
		}
	}
	return fmt.Errorf("no volume root %q", path)
}

// hiddenProblem is the sentence that says a root is hidden and how to fix it.
func hiddenProblem(r *rootState) string {
	return fmt.Sprintf("volume root %s %s; add -v %s:%s (compose: volumes:, Helm: volumeRoots)",
		r.Path, r.reason, r.Path, r.Path)
}

// insideProblem is the sentence that says a root lies in a protected path.
func insideProblem(r *rootState) string {
	return fmt.Sprintf("volume root %s lies inside the protected path %s; choose a root outside it", r.Path, r.inside)
}

// Check approves the host side of a volume. A host starting with "/" is a bind
// mount that must be one directory directly under a volume root the agent can
// see, clear of the protected paths (forbidden otherwise); a plain Docker
// volume name is a named volume; anything else is invalid. Check looks only at
// the string and at what is known of the roots; Ensure then makes the
// directory.
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
	if f := v.forbiddenBy(clean); f != "" {
		return Mount{}, v.refuse(host, "touches the protected path "+f)
	}
	parent, name := filepath.Dir(clean), filepath.Base(clean)
	var root *rootState
	for _, r := range v.roots {
		switch {
		case clean == r.Path || clean == r.Resolved:
			return Mount{}, v.refuse(host, "is the volume root "+r.Path+" itself")
		case parent == r.Path || parent == r.Resolved:
			root = r
		case within(clean, r.Path) || within(clean, r.Resolved):
			return Mount{}, v.refuse(host, "is nested deeper than one directory below the volume root "+r.Path)
		}
	}
	if root == nil {
		return Mount{}, v.refuse(host, "is not under a volume root")
	}
	if len(name) > maxBindName || !bindNameRE.MatchString(name) {
		return Mount{}, v.refuse(host, fmt.Sprintf("ends in %q, which is not a plain directory name (letters, digits, '_', '.', '-', not starting with '.', '_' or '-', at most %d bytes)", name, maxBindName))
	}
	source := root.Resolved + "/" + name
	if f := v.forbiddenBy(source); f != "" {
		return Mount{}, v.refuse(host, "touches the protected path "+f)
	}
	v.mu.RLock()
	vis, problem := root.vis, ""
	switch {
	case root.inside != "":
		vis, problem = hidden, insideProblem(root)
	case vis == hidden:
		problem = hiddenProblem(root)
	}
	v.mu.RUnlock()
	switch vis {
	case unchecked:
		return Mount{}, protocol.Errorf(protocol.CodeUnavailable,
			"volume host path %q: the agent has not yet been able to check that it sees the volume root %s at the same path as Docker; try again", host, root.Path)
	case hidden:
		return Mount{}, protocol.Errorf(protocol.CodeForbidden, "volume host path %q is refused: %s", host, problem)
	}
	return Mount{Kind: BindMount, Source: source, Root: root.Resolved, Name: name}, nil
}

func (v *Volumes) refuse(host, why string) error {
	return protocol.Errorf(protocol.CodeForbidden,
		"volume host path %q %s; bind sources must be one directory directly under a volume root, such as %s (volume roots: %s)",
		host, why, v.roots[0].Path+"/"+exampleName, strings.Join(v.paths(), ", "))
}

func (v *Volumes) paths() []string {
	out := make([]string, len(v.roots))
	for i, r := range v.roots {
		out[i] = r.Path
	}
	return out
}

// rootOf returns the root whose resolved path is resolved.
func (v *Volumes) rootOf(resolved string) *rootState {
	for _, r := range v.roots {
		if r.Resolved == resolved {
			return r
		}
	}
	return nil
}

// forbiddenBy returns the protected path (and what it is) that any of paths
// equals, lies inside or contains, or "".
func (v *Volumes) forbiddenBy(paths ...string) string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, p := range paths {
		for _, f := range v.forbidden {
			if within(p, f.path) || within(f.path, p) {
				return f.String()
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
// existing prefix resolved; the missing rest is appended unchanged. An
// existing component that cannot be resolved, such as a dangling symlink, is
// an error.
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
