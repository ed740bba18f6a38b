package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/mountinfo"
	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// startCheckTimeout bounds CheckRoots; when it cannot finish, the first
// create with a bind mount tries again.
const startCheckTimeout = 10 * time.Second

// podSandboxLabel marks the pause container of a Kubernetes pod run by
// dockershim or cri-dockerd; its mounts are not the agent's.
const podSandboxLabel = "io.kubernetes.docker.type"

// selfProbe is where the agent looks to find out whether it sees the volume
// roots as the Docker Engine does; tests point it at fixtures.
type selfProbe struct {
	Mountinfo string              // the agent's own mount table
	ProcRoot  string              // where /proc/<pid>/{mountinfo,exe,comm} are read
	Markers   []string            // files that exist only inside containers
	Getenv    func(string) string // for KUBERNETES_SERVICE_HOST
	// Remote is DOCKER_HOST when the daemon is not reached through a unix
	// socket (tcp://, ssh://), "" otherwise.
	Remote string
	// DaemonPID returns the pid of the process at the other end of the
	// Docker socket in the agent's pid namespace, 0 when unknown.
	DaemonPID func() int
	// DataRoot returns the daemon's data root (Info.DockerRootDir); nil:
	// the Engine asks its daemon.
	DataRoot func(context.Context) (string, error)
}

func defaultProbe(cli *client.Client) selfProbe {
	sock, isUnix := strings.CutPrefix(cli.DaemonHost(), "unix://")
	p := selfProbe{
		Mountinfo: mountinfo.Self,
		ProcRoot:  "/proc",
		Markers:   []string{"/.dockerenv", "/run/.containerenv"},
		Getenv:    os.Getenv,
		DaemonPID: func() int {
			if !isUnix {
				return 0
			}
			return socketPeerPID(sock)
		},
	}
	if !isUnix {
		p.Remote = cli.DaemonHost()
	}
	return p
}

// Process names (exe basename, else comm) at the other end of the socket.
const (
	dockerdName = "dockerd"
	systemdName = "systemd" // socket activation: systemd called listen()
)

// processName returns the name of process pid: the base name of its
// executable when the agent may read /proc/<pid>/exe (root may), else its
// comm (readable by all, but set by the process itself).
func processName(procRoot string, pid int) (string, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		return filepath.Base(strings.TrimSuffix(exe, " (deleted)")), nil
	}
	comm, err := os.ReadFile(filepath.Join(dir, "comm"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(comm)), nil
}

// daemonProcesses returns the processes that may be the Docker daemon behind
// the socket whose peer is pid: pid itself when it is dockerd; when it is
// systemd (the socket is socket-activated, and SO_PEERCRED names whoever
// called listen()), every dockerd in the agent's pid namespace. None when
// the peer is anything else, such as a proxy (socat) to another engine;
// what then names it. ok is false when the peer cannot be identified.
func daemonProcesses(procRoot string, pid int) (pids []int, what string, ok bool) {
	name, err := processName(procRoot, pid)
	if err != nil {
		return nil, "", false
	}
	what = fmt.Sprintf("%s (pid %d)", name, pid)
	switch name {
	case dockerdName:
		return []int{pid}, what, true
	case systemdName:
		entries, _ := os.ReadDir(procRoot)
		for _, e := range entries {
			p, err := strconv.Atoi(e.Name())
			if err != nil || p == pid {
				continue
			}
			if n, err := processName(procRoot, p); err == nil && n == dockerdName {
				pids = append(pids, p)
			}
		}
		return pids, what + ", which activated the socket, with no dockerd process the agent can see", true
	}
	return nil, what, true
}

// rootVerdict is whether the agent sees one root at Docker's path.
type rootVerdict struct {
	Visible bool
	Reason  string // when not visible: completes "volume root <path> ..."
}

// selfView is what the agent found out about where it runs.
type selfView struct {
	Where       string                 // for the log: host, container, ...
	ContainerID string                 // the agent's own container on this daemon, or ""
	Mounts      []container.MountPoint // that container's mounts
	Roots       map[string]rootVerdict // by policy.Root.Path
}

// inspectFunc inspects a container by id.
type inspectFunc func(ctx context.Context, id string) (container.InspectResponse, error)

// detectView decides for each root whether the agent sees it at the path
// Docker sees it:
//
//  0. The daemon is reached over the network (DOCKER_HOST tcp:// or ssh://):
//     nothing on this host says where its files are. Hidden.
//  1. The process serving the Docker socket is in the agent's pid
//     namespace. It must be dockerd (with socket activation, systemd holds
//     the socket; then a dockerd the agent can see): anything else, such as
//     a proxy to another engine, hides every root. When the daemon holds
//     each root in the very same mount as the agent (on the host, or in the
//     daemon's own container): visible. When the agent is not in a
//     container and the daemon's mounts differ (docker-in-docker): hidden.
//  2. The agent runs in a Docker container of this daemon (its
//     /etc/hostname comes from <data-root>/containers/<id>/): that
//     container's Mounts must hold each root in a bind mount from the same
//     host path.
//  3. It runs in some other container (a Kubernetes pod sandbox, another
//     engine, a container it cannot inspect; /.dockerenv,
//     /run/.containerenv, KUBERNETES_SERVICE_HOST): each root must lie on a
//     mount other than the container's "/" whose source path is consistent
//     with the same path (mountinfoVerdict).
//  4. Otherwise it runs on the host: visible.
//
// An error means the daemon could not be asked; the check is then repeated.
func detectView(ctx context.Context, p selfProbe, inspect inspectFunc, roots []policy.Root) (selfView, error) {
	view := selfView{Roots: map[string]rootVerdict{}}
	all := func(v rootVerdict) selfView {
		for _, r := range roots {
			view.Roots[r.Path] = v
		}
		return view
	}
	if p.Remote != "" {
		view.Where = "a remote Docker Engine (" + p.Remote + ")"
		return all(rootVerdict{Reason: fmt.Sprintf("cannot be checked: the Docker Engine is reached at %s (DOCKER_HOST), not through a local unix socket, and the agent cannot see its file system; bind mounts need the daemon of the agent's host, reached through its socket (named volumes work)", p.Remote)}), nil
	}
	mounts, mountsErr := readMountinfo(p.Mountinfo)

	otherNS := "" // the daemon, seen in another mount namespace
	if pid := p.DaemonPID(); pid > 0 && mountsErr == nil {
		// A peer the agent cannot identify (its /proc entry hidden) proves
		// nothing either way: judged as when its pid is unknown.
		if daemons, what, ok := daemonProcesses(p.ProcRoot, pid); ok {
			if len(daemons) == 0 {
				view.Where = "a client of " + what
				return all(rootVerdict{Reason: fmt.Sprintf("cannot be checked: the Docker socket is served by %s, not by dockerd (a proxy to another engine?), and the agent cannot see that engine's file system; bind mounts need dockerd's own socket", what)}), nil
			}
			for _, d := range daemons {
				daemon, err := readMountinfo(filepath.Join(p.ProcRoot, strconv.Itoa(d), "mountinfo"))
				same := err == nil
				for _, r := range roots {
					same = same && sameMount(mounts, daemon, r.Resolved)
				}
				if same {
					view.Where = "the Docker Engine's mount namespace (dockerd, pid " + strconv.Itoa(d) + ")"
					return all(rootVerdict{Visible: true}), nil
				}
			}
			otherNS = fmt.Sprintf("dockerd (pid %d)", daemons[0])
		}
	}

	id := ""
	if mountsErr == nil {
		id = containerIDFromMounts(mounts)
	}
	inContainer := id != "" || p.Getenv("KUBERNETES_SERVICE_HOST") != ""
	for _, m := range p.Markers {
		if _, err := os.Stat(m); err == nil {
			inContainer = true
		}
	}
	fallback := "container (judged from its mount table)"
	if id != "" {
		c, err := inspect(ctx, id)
		switch {
		case err == nil && c.Config != nil && c.Config.Labels[podSandboxLabel] == "podsandbox":
			fallback = "Kubernetes pod (sandbox " + id[:12] + "; judged from its mount table)"
		case err == nil && c.ContainerJSONBase != nil:
			view.Where, view.ContainerID, view.Mounts = "Docker container "+id[:12], id, c.Mounts
			for _, r := range roots {
				ok, why := dockerMountsVerdict(r.Resolved, c.Mounts)
				view.Roots[r.Path] = rootVerdict{Visible: ok, Reason: why}
			}
			return view, nil
		case transient(err):
			return view, fmt.Errorf("inspect the agent's own container %s: %w", id[:12], err)
		default:
			fallback = fmt.Sprintf("container %s that the Docker Engine does not know (%v; judged from its mount table)", id[:12], err)
		}
	}
	if !inContainer {
		view.Where = "host"
		if otherNS != "" {
			return all(rootVerdict{Reason: fmt.Sprintf("is not where the Docker Engine sees it: %s runs with other mounts than the agent's (docker-in-docker?), and the agent cannot see its file system", otherNS)}), nil
		}
		return all(rootVerdict{Visible: true}), nil
	}
	view.Where = fallback
	if mountsErr != nil {
		return all(rootVerdict{Reason: fmt.Sprintf("cannot be checked: the agent runs in a container and cannot read its mount table (%v)", mountsErr)}), nil
	}
	for _, r := range roots {
		ok, why := mountinfoVerdict(r.Resolved, mounts)
		view.Roots[r.Path] = rootVerdict{Visible: ok, Reason: why}
	}
	return view, nil
}

// transient reports whether err means the daemon could not be asked (as
// opposed to an answer such as "no such container").
func transient(err error) bool {
	if err == nil {
		return false
	}
	var pe *protocol.Error
	if errors.As(err, &pe) && (pe.Code == protocol.CodeUnavailable || pe.Code == protocol.CodeTimeout) {
		return true
	}
	return client.IsErrConnectionFailed(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || cerrdefs.IsUnavailable(err) || cerrdefs.IsDeadlineExceeded(err)
}

// dockerMountsVerdict judges from the agent's own container's Mounts whether
// root is bound from the same host path: the mount holding it (the one with
// the longest destination containing it) must be a bind whose source equals
// its destination, and no mount inside the root may come from elsewhere.
func dockerMountsVerdict(root string, mounts []container.MountPoint) (bool, string) {
	var best *container.MountPoint
	bestDst := ""
	for i := range mounts {
		dst := filepath.Clean(mounts[i].Destination)
		if within(root, dst) && (best == nil || len(dst) >= len(bestDst)) {
			best, bestDst = &mounts[i], dst
		}
	}
	if best == nil {
		return false, "is not mounted into the agent's container at the same path"
	}
	rest := strings.TrimPrefix(root, bestDst)
	if bestDst == "/" {
		rest = root
	}
	switch {
	case best.Type != "bind":
		what := string(best.Type)
		if best.Name != "" {
			what += " " + best.Name
		}
		return false, fmt.Sprintf("is mounted into the agent's container from a Docker %s, not from the host path of the same name", what)
	case filepath.Clean(best.Source) != bestDst:
		return false, fmt.Sprintf("is mounted into the agent's container from the host path %s, not from the same path",
			filepath.Clean(best.Source+rest))
	}
	for i := range mounts {
		m := &mounts[i]
		dst := filepath.Clean(m.Destination)
		if m != best && dst != root && within(dst, root) && (m.Type != "bind" || filepath.Clean(m.Source) != dst) {
			return false, fmt.Sprintf("has %s mounted over part of it from elsewhere in the agent's container", dst)
		}
	}
	return true, ""
}

// checkRoots finds out once whether the agent sees each volume root at the
// path Docker sees it, marks the policy accordingly and logs what it found:
// a warning for each root under which bind mounts are refused. First it
// learns where the daemon keeps its data (Info.DockerRootDir) and protects
// it, and, when the agent runs in a container of this daemon, the host
// source of its state directory. Until it has succeeded, binds are
// unavailable; it is tried again before each create with a bind mount.
func (e *Engine) checkRoots(ctx context.Context) error {
	e.rootsMu.Lock()
	defer e.rootsMu.Unlock()
	if e.rootsChecked {
		return nil
	}
	if e.probe.Remote == "" {
		dataRoot := e.probe.DataRoot
		if dataRoot == nil {
			dataRoot = e.DataRoot
		}
		dir, err := dataRoot(ctx)
		if err != nil {
			return err
		}
		if dir == "" {
			e.log.Warn("the Docker Engine does not say where its data root is: only the default /var/lib/docker is protected from bind mounts")
		} else if err := e.volumes.Protect("Docker's data root", dir); err != nil {
			e.log.Warn("bind mounts under this volume root are refused", "problem", err)
		}
	}
	view, err := detectView(ctx, e.probe, e.inspectByID, e.volumes.Roots())
	if err != nil {
		return err
	}
	if src := hostSource(e.stateDir, view.Mounts); src != "" {
		if err := e.volumes.Protect("the agent's state directory (STATE_DIR) on the host", src); err != nil {
			e.log.Warn("bind mounts under this volume root are refused", "problem", err)
		}
	}
	for path, v := range view.Roots {
		if v.Visible {
			err = e.volumes.MarkVisible(path)
		} else {
			err = e.volumes.MarkHidden(path, v.Reason)
		}
		if err != nil {
			return err
		}
	}
	e.selfID = view.ContainerID
	e.rootsChecked = true
	for _, st := range e.volumes.Status() {
		if st.Visible {
			e.log.Info("volume root checked: the agent sees it as Docker does", "root", st.Path, "agentRunsIn", view.Where)
		} else {
			e.log.Warn("bind mounts under this volume root are refused", "root", st.Path, "agentRunsIn", view.Where, "problem", st.Problem)
		}
	}
	return nil
}

// DataRoot asks the daemon for its data root (Info.DockerRootDir): the
// bind policy protects it, and heartbeats report the usage of its file
// system.
func (e *Engine) DataRoot(ctx context.Context) (string, error) {
	if err := e.ready(ctx, "query the Docker Engine's data root"); err != nil {
		return "", err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	info, err := e.cli.Info(ctx)
	if err != nil {
		return "", dockerError(err, "query the Docker Engine's data root")
	}
	return info.DockerRootDir, nil
}

// hostSource returns the host path of path, a directory of the agent's own
// container, from that container's mounts: the source of the mount holding
// it (the longest destination) plus the rest of the path; "" when path is
// "", or not on a mount (then it is in the container's own file system,
// which lies in Docker's data root).
func hostSource(path string, mounts []container.MountPoint) string {
	if path == "" {
		return ""
	}
	path = filepath.Clean(path)
	var best *container.MountPoint
	for i := range mounts {
		dst := filepath.Clean(mounts[i].Destination)
		if within(path, dst) && (best == nil || len(dst) > len(filepath.Clean(best.Destination))) {
			best = &mounts[i]
		}
	}
	if best == nil || best.Source == "" {
		return ""
	}
	return filepath.Join(best.Source, strings.TrimPrefix(path, filepath.Clean(best.Destination)))
}

// inspectByID inspects a container for detectView.
func (e *Engine) inspectByID(ctx context.Context, id string) (container.InspectResponse, error) {
	if err := e.ready(ctx, "inspect the agent's own container"); err != nil {
		return container.InspectResponse{}, err
	}
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	return e.cli.ContainerInspect(ctx, id)
}

// selfContainer returns the agent's own container on this daemon, or "".
func (e *Engine) selfContainer() string {
	e.rootsMu.Lock()
	defer e.rootsMu.Unlock()
	return e.selfID
}
