package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/docker"
)

// MinAPIVersion is the oldest Docker Engine API the agent supports (Docker
// 19.03); newer fields are negotiated down to the daemon's version.
const MinAPIVersion = "1.40"

// CheckDockerSocket checks that the Docker daemon at host (DOCKER_HOST form)
// accepts connections from this process. For a unix socket that refuses
// us it names the socket's group and prints the exact fix.
func CheckDockerSocket(ctx context.Context, host string, timeout time.Duration) Result {
	r := Result{Check: "docker socket"}
	u, err := url.Parse(host)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("DOCKER_HOST %q: %v", host, err), "set DOCKER_HOST to unix:///var/run/docker.sock or tcp://HOST:2376"
		return r
	}
	switch u.Scheme {
	case "unix":
	case "tcp", "http", "https":
		return checkDockerTCP(ctx, u.Host, timeout)
	default:
		r.Status, r.Detail = Skip, fmt.Sprintf("DOCKER_HOST %s: only unix and tcp hosts are checked", host)
		return r
	}

	path := u.Path
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		r.Status, r.Detail = Fail, "no Docker socket at "+path
		r.Fix = "start Docker on this host (sudo systemctl start docker)\n" +
			"in a container, mount the host's socket: -v /var/run/docker.sock:/var/run/docker.sock\n" +
			"or point DOCKER_HOST at the daemon"
		return r
	}
	if err != nil {
		r.Status, r.Detail = Fail, err.Error()
		r.Fix = socketPermissionFix(path, nil)
		return r
	}
	if st.Mode().Type() != fs.ModeSocket {
		r.Status, r.Detail = Fail, path+" is not a socket ("+st.Mode().String()+")"
		r.Fix = "mount the host's Docker socket itself: -v /var/run/docker.sock:/var/run/docker.sock"
		return r
	}

	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "unix", path)
	switch {
	case err == nil:
		conn.Close()
		r.Status, r.Detail = OK, path+" accepts connections"
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		r.Status = Fail
		r.Detail = fmt.Sprintf("permission denied on %s (%s); this process runs as %s", path, describeOwner(st), describeSelf())
		r.Fix = socketPermissionFix(path, st)
	case errors.Is(err, syscall.ECONNREFUSED):
		r.Status, r.Detail = Fail, path+" exists but no daemon listens on it"
		r.Fix = "start Docker (sudo systemctl start docker) and check `docker info`"
	default:
		r.Status, r.Detail = Fail, err.Error()
		r.Fix = "check that the Docker daemon runs: docker info"
	}
	return r
}

func checkDockerTCP(ctx context.Context, addr string, timeout time.Duration) Result {
	r := Result{Check: "docker socket"}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		r.Status, r.Detail = Fail, err.Error()
		r.Fix = "check DOCKER_HOST (" + addr + "), that the daemon listens there, and firewalls"
		return r
	}
	conn.Close()
	r.Status, r.Detail = OK, addr+" accepts connections"
	return r
}

// socketPermissionFix is the seed's "connect EACCES /var/run/docker.sock"
// answer, made exact: the socket's group id for --group-add, and the
// usermod line for a bare host.
func socketPermissionFix(path string, st fs.FileInfo) string {
	gid := "$(stat -c %g " + path + ")"
	group := "docker"
	if st != nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			gid = strconv.FormatUint(uint64(s.Gid), 10)
			if g, err := user.LookupGroupId(gid); err == nil {
				group = g.Name
			}
		}
	}
	who := "<user>"
	if u, err := user.Current(); err == nil && u.Username != "" {
		who = u.Username
	}
	return fmt.Sprintf("in a container, add the socket's group: docker run --group-add %s ... (in general: --group-add $(stat -c %%g %s));\n"+
		"compose: group_add: [\"%s\"]; Kubernetes: securityContext.supplementalGroups: [%s]\n"+
		"on a bare host: sudo usermod -aG %s %s, then restart the agent (systemd: SupplementaryGroups=%s)",
		gid, path, gid, gid, group, who, group)
}

func describeOwner(st fs.FileInfo) string {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return st.Mode().String()
	}
	return fmt.Sprintf("owner uid %d, group %d, mode %s", s.Uid, s.Gid, st.Mode())
}

func describeSelf() string {
	groups, _ := os.Getgroups()
	gs := make([]string, len(groups))
	for i, g := range groups {
		gs[i] = strconv.Itoa(g)
	}
	return fmt.Sprintf("uid %d, gid %d, groups [%s]", os.Getuid(), os.Getgid(), strings.Join(gs, " "))
}

// CheckDockerAPI asks the daemon for its version and checks that its API
// is one the agent supports.
func CheckDockerAPI(ctx context.Context, daemon docker.Daemon, timeout time.Duration) Result {
	r := Result{Check: "docker api"}
	cli, err := client.NewClientWithOpts(append(daemon.ClientOpts(), client.WithAPIVersionNegotiation())...)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "check DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH"
		return r
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := cli.ServerVersion(ctx)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "check that the Docker daemon answers: docker version"
		return r
	}
	if versions.LessThan(v.APIVersion, MinAPIVersion) {
		r.Status = Fail
		r.Detail = fmt.Sprintf("Docker Engine %s speaks API %s, older than %s", v.Version, v.APIVersion, MinAPIVersion)
		r.Fix = "upgrade Docker Engine to 19.03 or later"
		return r
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("Docker Engine %s, API %s (the agent uses %s)", v.Version, v.APIVersion, cli.ClientVersion())
	return r
}
