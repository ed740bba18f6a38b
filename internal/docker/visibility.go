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

	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// startCheckTimeout bounds the check of the volume roots in New; when it
// cannot finish, the first create with a bind mount tries again.
const startCheckTimeout = 10 * time.Second

// podSandboxLabel marks the pause container of a Kubernetes pod run by
// dockershim or cri-dockerd; its mounts are not the agent's.
const podSandboxLabel = "io.kubernetes.docker.type"

// selfProbe is where the agent looks to find out whether it sees the volume
// roots as the Docker Engine does; tests point it at fixtures.
type selfProbe struct {
	Mountinfo string              // the agent's own mount table
	ProcRoot  string              // where /proc/<pid>/mountinfo of the daemon is read
	Markers   []string            // files that exist only inside containers
	Getenv    func(string) string // for KUBERNETES_SERVICE_HOST
	// DaemonPID returns the pid of the process at the other end of the
	// Docker socket in the agent's pid namespace, 0 when unknown.
	DaemonPID func() int
}

func defaultProbe(cli *client.Client) selfProbe {
	sock, isUnix := strings.CutPrefix(cli.DaemonHost(), "unix://")
	return selfProbe{
		Mountinfo: "/proc/self/mountinfo",
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
	Roots       map[string]rootVerdict // by policy.Root.Path
}

// inspectFunc inspects a container by id.
type inspectFunc func(ctx context.Context, id string) (container.InspectResponse, error)

// detectView decides for each root whether the agent sees it at the path
// Docker sees it:
//
//  1. The agent shares the daemon's mount table (on the host, or in the
//     daemon's own container): the daemon's process is in the agent's pid
//     namespace and holds each root in the very same mount. Visible.
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
	mounts, mountsErr := readMountinfo(p.Mountinfo)

	if pid := p.DaemonPID(); pid > 0 && mountsErr == nil {
		daemon, err := readMountinfo(filepath.Join(p.ProcRoot, strconv.Itoa(pid), "mountinfo"))
		same := err == nil
		for _, r := range roots {
			same = same && sameMount(mounts, daemon, r.Resolved)
		}
		if same {
			view.Where = "the Docker Engine's mount namespace (pid " + strconv.Itoa(pid) + ")"
			return all(rootVerdict{Visible: true}), nil
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
			view.Where, view.ContainerID = "Docker container "+id[:12], id
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
// a warning for each root under which bind mounts are refused. Until it has
// succeeded, binds are unavailable; it is tried again before each create
// with a bind mount.
func (e *Engine) checkRoots(ctx context.Context) error {
	e.rootsMu.Lock()
	defer e.rootsMu.Unlock()
	if e.rootsChecked {
		return nil
	}
	view, err := detectView(ctx, e.probe, e.inspectByID, e.volumes.Roots())
	if err != nil {
		return err
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
