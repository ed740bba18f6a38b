package docker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/lormas/lormas-agent/internal/policy"
)

// Fixtures in testdata/mountinfo: docker-container.txt is the mount table of
// a real container (docker run --read-only -v /tmp/fx/root:/tmp/fx/root
// -v /tmp/fx/other:/var/lib/lormas/volumes -v fxvol:/vol); the Kubernetes
// ones are written after real pods (cri-dockerd: /etc/hostname from the
// pod sandbox's Docker directory; containerd: from the CRI sandbox
// directory); host.txt is a host's.
const (
	fixtureContainerID = "371b25a9394248b693edad6ebed3a952c42c7661b846dfc773eaa60d285d7859"
	fixtureSandboxID   = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
)

func fixture(name string) string { return filepath.Join("testdata", "mountinfo", name) }

func mustMounts(t *testing.T, name string) []mountEntry {
	t.Helper()
	m, err := readMountinfo(fixture(name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return m
}

func TestParseMountinfo(t *testing.T) {
	m := mustMounts(t, "docker-container.txt")
	if len(m) != 31 {
		t.Errorf("%d mounts, want 31", len(m))
	}
	if got := covering(m, "/tmp/fx/root/a"); got == nil || got.ID != 124 || got.Root != "/tmp/fx/root" || got.FSType != "ext4" {
		t.Errorf("covering /tmp/fx/root/a = %+v", got)
	}
	if got := covering(m, "/etc/passwd"); got == nil || got.Point != "/" || got.FSType != "fuse.fuse-overlayfs" {
		t.Errorf("covering /etc/passwd = %+v", got)
	}
	k := mustMounts(t, "k8s-containerd.txt")
	if got := covering(k, "/var/lib/lormas/with space/x"); got == nil || got.Root != "/var/lib/lormas/with space" {
		t.Errorf("escaped mount point: %+v", got)
	}
}

func TestContainerIDFromMounts(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"docker-container.txt", fixtureContainerID},
		{"k8s-cri-dockerd.txt", fixtureSandboxID},
		{"k8s-containerd.txt", ""},
		{"host.txt", ""},
	} {
		if got := containerIDFromMounts(mustMounts(t, tt.file)); got != tt.want {
			t.Errorf("%s: id %q, want %q", tt.file, got, tt.want)
		}
	}
	// The data root on its own file system: the source starts at /containers.
	m := []mountEntry{{ID: 1, Root: "/containers/" + fixtureContainerID + "/hostname", Point: "/etc/hostname"}}
	if got := containerIDFromMounts(m); got != fixtureContainerID {
		t.Errorf("data root mount: %q", got)
	}
	// Elsewhere than /etc/hostname it means nothing.
	m[0].Point = "/data/hostname"
	if got := containerIDFromMounts(m); got != "" {
		t.Errorf("other mount point: %q", got)
	}
}

func bindMP(src, dst string) container.MountPoint {
	return container.MountPoint{Type: mount.TypeBind, Source: src, Destination: dst, RW: true}
}

func TestDockerMountsVerdict(t *testing.T) {
	const root = "/var/lib/lormas/volumes"
	sock := bindMP("/var/run/docker.sock", "/var/run/docker.sock")
	for _, tt := range []struct {
		name   string
		mounts []container.MountPoint
		want   string // "" = visible
	}{
		{"identical", []container.MountPoint{sock, bindMP(root, root)}, ""},
		{"identical with a trailing slash", []container.MountPoint{bindMP(root+"/", root)}, ""},
		{"identical parent", []container.MountPoint{bindMP("/var/lib/lormas", "/var/lib/lormas")}, ""},
		{"not mounted", []container.MountPoint{sock}, "is not mounted into the agent's container at the same path"},
		{"no mounts", nil, "is not mounted into the agent's container at the same path"},
		{"other host path", []container.MountPoint{bindMP("/tmp/x", root)}, "from the host path /tmp/x, not from the same path"},
		{"other parent path", []container.MountPoint{bindMP("/srv/lib", "/var/lib")}, "from the host path /srv/lib/lormas/volumes, not from the same path"},
		{"identical parent, other root", []container.MountPoint{bindMP("/var/lib", "/var/lib"), bindMP("/tmp/x", root)}, "from the host path /tmp/x"},
		{"docker volume", []container.MountPoint{{Type: mount.TypeVolume, Name: "vols", Source: "/var/lib/docker/volumes/vols/_data", Destination: root}}, "from a Docker volume vols"},
		{"tmpfs", []container.MountPoint{{Type: mount.TypeTmpfs, Destination: root}}, "from a Docker tmpfs"},
		{"a mount inside from elsewhere", []container.MountPoint{bindMP(root, root), bindMP("/etc", root+"/web")}, "has " + root + "/web mounted over part of it"},
		{"a mount inside, identical", []container.MountPoint{bindMP(root, root), bindMP(root+"/web", root+"/web")}, ""},
		{"a sibling", []container.MountPoint{bindMP(root, root), bindMP("/x", root+"-other")}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := dockerMountsVerdict(root, tt.mounts)
			if tt.want == "" {
				if !ok {
					t.Errorf("not visible: %s", why)
				}
				return
			}
			if ok || !strings.Contains(why, tt.want) {
				t.Errorf("verdict %t %q, want not visible: %q", ok, why, tt.want)
			}
		})
	}
}

func TestMountinfoVerdict(t *testing.T) {
	for _, tt := range []struct {
		file, root string
		want       string // "" = visible
	}{
		{"docker-container.txt", "/tmp/fx/root", ""},
		{"docker-container.txt", "/tmp/fx/root/", ""},
		{"docker-container.txt", "/var/lib/lormas/volumes", "from another directory (/tmp/fx/other on a ext4 file system)"},
		{"docker-container.txt", "/vol", "from another directory"},
		{"docker-container.txt", "/srv/volumes", "is not mounted into the agent's container at the same path"},
		{"docker-container.txt", "/dev/shm/x", "from another directory"},
		{"k8s-cri-dockerd.txt", "/var/lib/lormas/volumes", ""},
		{"k8s-cri-dockerd.txt", "/var/lib/lormas/other", "from another directory (/srv/other"},
		{"k8s-cri-dockerd.txt", "/tmp/volumes", "from another directory"},
		{"k8s-cri-dockerd.txt", "/data/lormas/volumes", ""}, // consistent: /lormas/volumes of its file system
		{"k8s-cri-dockerd.txt", "/scratch", "from another directory (/ on a tmpfs file system)"},
		{"k8s-containerd.txt", "/var/lib/lormas/volumes", ""},
		{"k8s-containerd.txt", "/var/lib/lormas/with space", ""},
		{"k8s-containerd.txt", "/var/lib/lormas", "is not mounted"},
	} {
		ok, why := mountinfoVerdict(filepath.Clean(tt.root), mustMounts(t, tt.file))
		if tt.want == "" {
			if !ok {
				t.Errorf("%s %s: not visible: %s", tt.file, tt.root, why)
			}
			continue
		}
		if ok || !strings.Contains(why, tt.want) {
			t.Errorf("%s %s: verdict %t %q, want not visible: %q", tt.file, tt.root, ok, why, tt.want)
		}
	}
	// A mount inside the root from elsewhere hides part of it.
	m := append(mustMounts(t, "k8s-containerd.txt"), mountEntry{ID: 9999, Root: "/etc", Point: "/var/lib/lormas/volumes/web", FSType: "ext4"})
	if ok, why := mountinfoVerdict("/var/lib/lormas/volumes", m); ok || !strings.Contains(why, "/var/lib/lormas/volumes/web mounted over part of it") {
		t.Errorf("mount inside the root: %t %q", ok, why)
	}
}

// probeFor builds a probe over a fixture mount table.
func probeFor(t *testing.T, mountinfo string, markers bool, env map[string]string) selfProbe {
	t.Helper()
	p := selfProbe{
		Mountinfo: fixture(mountinfo),
		ProcRoot:  t.TempDir(),
		Getenv:    func(k string) string { return env[k] },
		DaemonPID: func() int { return 0 },
	}
	if markers {
		dockerenv := filepath.Join(t.TempDir(), ".dockerenv")
		must(t, os.WriteFile(dockerenv, nil, 0o644))
		p.Markers = []string{dockerenv}
	} else {
		p.Markers = []string{filepath.Join(t.TempDir(), "absent")}
	}
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeInspect answers for one id, counting calls.
type fakeInspect struct {
	id     string
	resp   container.InspectResponse
	err    error
	called int
}

func (f *fakeInspect) inspect(_ context.Context, id string) (container.InspectResponse, error) {
	f.called++
	if f.err != nil {
		return container.InspectResponse{}, f.err
	}
	if id != f.id {
		return container.InspectResponse{}, cerrdefs.ErrNotFound
	}
	return f.resp, nil
}

func inspectWith(id string, labels map[string]string, mounts ...container.MountPoint) *fakeInspect {
	return &fakeInspect{id: id, resp: container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: id},
		Config:            &container.Config{Labels: labels},
		Mounts:            mounts,
	}}
}

func TestDetectView(t *testing.T) {
	roots := []policy.Root{
		{Path: "/tmp/fx/root", Resolved: "/tmp/fx/root"},
		{Path: "/var/lib/lormas/volumes", Resolved: "/var/lib/lormas/volumes"},
	}
	containerMounts := []container.MountPoint{
		bindMP("/tmp/fx/root", "/tmp/fx/root"),
		bindMP("/tmp/fx/other", "/var/lib/lormas/volumes"),
	}
	const hiddenWant = "from the host path /tmp/fx/other, not from the same path"
	const fromTable = "from another directory (/tmp/fx/other"

	type want struct {
		where, id string
		visible   []bool   // per root
		reason    []string // per root, substring
		inspected bool
		err       bool
	}
	sameNS := func(t *testing.T, file string) selfProbe {
		p := probeFor(t, "host.txt", true, nil)
		dir := filepath.Join(p.ProcRoot, "4242")
		must(t, os.MkdirAll(dir, 0o755))
		b, err := os.ReadFile(fixture(file))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, "mountinfo"), b, 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "comm"), []byte("dockerd\n"), 0o644))
		p.DaemonPID = func() int { return 4242 }
		return p
	}
	for _, tt := range []struct {
		name    string
		probe   func(t *testing.T) selfProbe
		inspect *fakeInspect
		want    want
	}{
		{"host", func(t *testing.T) selfProbe { return probeFor(t, "host.txt", false, nil) }, inspectWith("x", nil),
			want{where: "host", visible: []bool{true, true}}},
		{"same mount table as the daemon, despite /.dockerenv", func(t *testing.T) selfProbe { return sameNS(t, "host.txt") }, inspectWith("x", nil),
			want{where: "mount namespace (dockerd, pid 4242)", visible: []bool{true, true}}},
		{"daemon visible, other mount table", func(t *testing.T) selfProbe { return sameNS(t, "k8s-containerd.txt") }, inspectWith("x", nil),
			want{where: "judged from its mount table", visible: []bool{false, false}, reason: []string{"is not mounted", "is not mounted"}}},
		{"Docker container of this daemon", func(t *testing.T) selfProbe { return probeFor(t, "docker-container.txt", true, nil) },
			inspectWith(fixtureContainerID, nil, containerMounts...),
			want{where: "Docker container 371b25a93942", id: fixtureContainerID, visible: []bool{true, false}, reason: []string{"", hiddenWant}, inspected: true}},
		{"Docker container without /.dockerenv", func(t *testing.T) selfProbe { return probeFor(t, "docker-container.txt", false, nil) },
			inspectWith(fixtureContainerID, nil, bindMP("/tmp/fx/other", "/tmp/fx/root")),
			want{where: "Docker container", id: fixtureContainerID, visible: []bool{false, false}, reason: []string{"from the host path /tmp/fx/other", "is not mounted"}, inspected: true}},
		{"daemon down", func(t *testing.T) selfProbe { return probeFor(t, "docker-container.txt", true, nil) },
			&fakeInspect{err: cerrdefs.ErrUnavailable},
			want{err: true, inspected: true}},
		{"container on another engine", func(t *testing.T) selfProbe { return probeFor(t, "docker-container.txt", true, nil) },
			inspectWith("other", nil),
			want{where: "does not know", visible: []bool{true, false}, reason: []string{"", fromTable}, inspected: true}},
		{"Kubernetes pod sandbox (cri-dockerd)", func(t *testing.T) selfProbe {
			return probeFor(t, "k8s-cri-dockerd.txt", false, map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
		}, inspectWith(fixtureSandboxID, map[string]string{"io.kubernetes.docker.type": "podsandbox"}, bindMP("/", "/var/lib/lormas/volumes")),
			want{where: "Kubernetes pod", visible: []bool{false, true}, reason: []string{"kubernetes.io~empty-dir/tmp on a tmpfs file system", ""}, inspected: true}},
		{"Kubernetes with containerd", func(t *testing.T) selfProbe {
			return probeFor(t, "k8s-containerd.txt", false, map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
		}, inspectWith("x", nil),
			want{where: "judged from its mount table", visible: []bool{false, true}, reason: []string{"is not mounted", ""}}},
		{"container without a readable mount table", func(t *testing.T) selfProbe {
			p := probeFor(t, "host.txt", true, nil)
			p.Mountinfo = filepath.Join(t.TempDir(), "missing")
			return p
		}, inspectWith("x", nil),
			want{where: "container", visible: []bool{false, false}, reason: []string{"cannot read its mount table", "cannot read its mount table"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			view, err := detectView(context.Background(), tt.probe(t), tt.inspect.inspect, roots)
			if (tt.inspect.called > 0) != tt.want.inspected {
				t.Errorf("inspected %d times, want inspected %t", tt.inspect.called, tt.want.inspected)
			}
			if tt.want.err {
				if err == nil {
					t.Fatalf("no error; view %+v", view)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(view.Where, tt.want.where) || view.ContainerID != tt.want.id {
				t.Errorf("where %q id %q, want %q %q", view.Where, view.ContainerID, tt.want.where, tt.want.id)
			}
			for i, r := range roots {
				v := view.Roots[r.Path]
				if v.Visible != tt.want.visible[i] {
					t.Errorf("%s visible %t (%s), want %t", r.Path, v.Visible, v.Reason, tt.want.visible[i])
				}
				if tt.want.reason != nil && !strings.Contains(v.Reason, tt.want.reason[i]) {
					t.Errorf("%s reason %q, want %q", r.Path, v.Reason, tt.want.reason[i])
				}
			}
		})
	}
}

// fakeProc adds process pid to the probe's /proc: its comm, its exe (a
// symlink, when exe is not ""), and its mount table (a fixture, when
// mountinfo is not "").
func fakeProc(t *testing.T, p selfProbe, pid int, comm, exe, mountinfo string) {
	t.Helper()
	dir := filepath.Join(p.ProcRoot, strconv.Itoa(pid))
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644))
	if exe != "" {
		must(t, os.Symlink(exe, filepath.Join(dir, "exe")))
	}
	if mountinfo != "" {
		b, err := os.ReadFile(fixture(mountinfo))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, "mountinfo"), b, 0o644))
	}
}

// TestDetectViewDaemonIdentity: L1. The code before took "the process at
// the other end of the socket shares the agent's mounts" as proof that the
// daemon sees the roots as the agent does, and judged an agent outside any
// container as seeing them whatever served the socket. A socat in the
// agent's own mount namespace forwarding to a remote or docker-in-docker
// engine, the socket of a docker-in-docker daemon itself, and a tcp:// or
// ssh:// DOCKER_HOST all passed: binds were approved by looking at the
// agent's file system while another one was mounted.
func TestDetectViewDaemonIdentity(t *testing.T) {
	roots := []policy.Root{{Path: "/var/lib/lormas/volumes", Resolved: "/var/lib/lormas/volumes"}}
	onHost := func(t *testing.T) selfProbe {
		p := probeFor(t, "host.txt", false, nil)
		p.DaemonPID = func() int { return 4242 }
		return p
	}
	for _, tt := range []struct {
		name    string
		probe   func(t *testing.T) selfProbe
		visible bool
		want    string // in Where when visible, in the reason otherwise
	}{
		{"dockerd in the agent's mount namespace", func(t *testing.T) selfProbe {
			p := onHost(t)
			fakeProc(t, p, 4242, "dockerd", "", "host.txt")
			return p
		}, true, "mount namespace (dockerd, pid 4242)"},
		{"dockerd by its executable, replaced on disk since", func(t *testing.T) selfProbe {
			p := onHost(t)
			fakeProc(t, p, 4242, "dockerd", "/usr/bin/dockerd (deleted)", "host.txt")
			return p
		}, true, "dockerd, pid 4242"},
		{"socat proxy in the agent's mount namespace", func(t *testing.T) selfProbe {
			p := onHost(t)
			fakeProc(t, p, 4242, "socat", "", "host.txt")
			return p
		}, false, "the Docker socket is served by socat (pid 4242), not by dockerd (a proxy to another engine?)"},
		{"a proxy calling itself dockerd, its executable says otherwise", func(t *testing.T) selfProbe {
			p := onHost(t)
			fakeProc(t, p, 4242, "dockerd", "/usr/bin/socat", "host.txt")
			return p
		}, false, "served by socat (pid 4242)"},
		{"docker-in-docker daemon's socket, agent on the host", func(t *testing.T) selfProbe {
			p := onHost(t)
			fakeProc(t, p, 4242, "dockerd", "", "k8s-containerd.txt")
			return p
		}, false, "dockerd (pid 4242) runs with other mounts than the agent's (docker-in-docker?)"},
		{"socket activated by systemd, dockerd in the agent's mount namespace", func(t *testing.T) selfProbe {
			p := onHost(t)
			p.DaemonPID = func() int { return 1 }
			fakeProc(t, p, 1, "systemd", "/usr/lib/systemd/systemd", "host.txt")
			fakeProc(t, p, 77, "containerd", "", "host.txt")
			fakeProc(t, p, 4242, "dockerd", "", "host.txt")
			return p
		}, true, "dockerd, pid 4242"},
		{"socket activated by systemd, no dockerd", func(t *testing.T) selfProbe {
			p := onHost(t)
			p.DaemonPID = func() int { return 1 }
			fakeProc(t, p, 1, "systemd", "", "host.txt")
			fakeProc(t, p, 88, "systemd-socket-", "", "host.txt")
			return p
		}, false, "served by systemd (pid 1), which activated the socket, with no dockerd process the agent can see"},
		{"peer hidden from the agent (hidepid): judged as unknown", func(t *testing.T) selfProbe {
			return onHost(t)
		}, true, "host"},
		{"tcp DOCKER_HOST", func(t *testing.T) selfProbe {
			p := probeFor(t, "host.txt", false, nil)
			p.Remote = "tcp://10.0.0.5:2375"
			return p
		}, false, "the Docker Engine is reached at tcp://10.0.0.5:2375 (DOCKER_HOST), not through a local unix socket"},
		{"ssh DOCKER_HOST", func(t *testing.T) selfProbe {
			p := probeFor(t, "host.txt", false, nil)
			p.Remote = "ssh://ops@build-1"
			return p
		}, false, "reached at ssh://ops@build-1 (DOCKER_HOST)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inspect := inspectWith("x", nil)
			view, err := detectView(context.Background(), tt.probe(t), inspect.inspect, roots)
			if err != nil {
				t.Fatal(err)
			}
			v := view.Roots[roots[0].Path]
			if v.Visible != tt.visible {
				t.Fatalf("visible %t (where %q, reason %q), want %t", v.Visible, view.Where, v.Reason, tt.visible)
			}
			if got := view.Where; tt.visible && !strings.Contains(got, tt.want) {
				t.Errorf("where %q, want %q", got, tt.want)
			}
			if !tt.visible && !strings.Contains(v.Reason, tt.want) {
				t.Errorf("reason %q, want %q", v.Reason, tt.want)
			}
			if inspect.called != 0 {
				t.Errorf("inspected the agent's container %d times outside any container", inspect.called)
			}
		})
	}
}

// TestHostSource: the host path of the agent's state directory, from its own
// container's mounts.
func TestHostSource(t *testing.T) {
	mounts := []container.MountPoint{
		bindMP("/data/lormas-agent", "/var/lib/lormas-agent"),
		{Type: mount.TypeVolume, Name: "st", Source: "/var/lib/docker/volumes/st/_data", Destination: "/state"},
		bindMP("/srv", "/var/lib"),
	}
	for _, tt := range []struct{ path, want string }{
		{"/var/lib/lormas-agent", "/data/lormas-agent"},
		{"/var/lib/lormas-agent/", "/data/lormas-agent"},
		{"/var/lib/other", "/srv/other"},
		{"/state/x", "/var/lib/docker/volumes/st/_data/x"},
		{"/home/agent", ""},
		{"", ""},
	} {
		if got := hostSource(tt.path, mounts); got != tt.want {
			t.Errorf("hostSource(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{cerrdefs.ErrNotFound, false},
		{cerrdefs.ErrPermissionDenied, false},
		{cerrdefs.ErrUnavailable, true},
		{context.DeadlineExceeded, true},
		{dockerError(context.DeadlineExceeded, "x"), true},
		{errors.New("boom"), false},
	} {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}
