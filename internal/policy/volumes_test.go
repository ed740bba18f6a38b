package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// sandbox makes a volume root reached through a symlink, a second root that
// does not exist yet, a hidden third root, and a fake socket passed as an
// extra forbidden path.
type sandbox struct {
	dir, root, rootLink, second, hidden, sock string
	v                                         *Volumes
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox{
		dir: dir, root: filepath.Join(dir, "root"), rootLink: filepath.Join(dir, "root-link"),
		second: filepath.Join(dir, "second-root-missing"), hidden: filepath.Join(dir, "hidden-root"),
	}
	s.sock = filepath.Join(dir, "run", "docker.sock")
	must(t, os.MkdirAll(filepath.Join(s.root, "data", "app"), 0o755))
	must(t, os.MkdirAll(filepath.Dir(s.sock), 0o755))
	must(t, os.WriteFile(s.sock, nil, 0o600))
	must(t, os.MkdirAll(filepath.Join(dir, "outside"), 0o755))
	must(t, os.MkdirAll(s.hidden, 0o755))
	must(t, os.Symlink("/", filepath.Join(s.root, "link-root")))
	must(t, os.Symlink("data", filepath.Join(s.root, "link-in")))
	must(t, os.Symlink(filepath.Join(s.root, "nothing"), filepath.Join(s.root, "dangling")))
	must(t, os.WriteFile(filepath.Join(s.root, "file"), []byte("x"), 0o644))
	must(t, os.Symlink(s.root, s.rootLink))
	s.v, err = NewVolumes([]string{s.rootLink, s.second, s.hidden}, s.sock)
	if err != nil {
		t.Fatalf("NewVolumes: %v", err)
	}
	must(t, s.v.MarkVisible(s.rootLink))
	must(t, s.v.MarkVisible(s.second))
	must(t, s.v.MarkHidden(s.hidden, "is not mounted into the agent's container at the same path"))
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestVolumesCheck(t *testing.T) {
	s := newSandbox(t)
	tests := []struct {
		name       string
		host       string
		wantCode   protocol.Code // "" = allowed
		wantKind   MountKind
		wantSource string
		wantText   string // in the error
	}{
		{"one dir under the root", s.rootLink + "/data", "", BindMount, s.root + "/data", ""},
		{"by the resolved root", s.root + "/data", "", BindMount, s.root + "/data", ""},
		{"missing dir", s.rootLink + "/new", "", BindMount, s.root + "/new", ""},
		{"trailing slash and double slash", s.rootLink + "//data/", "", BindMount, s.root + "/data", ""},
		{"dot component", s.rootLink + "/./data", "", BindMount, s.root + "/data", ""},
		{"dots inside the name", s.rootLink + "/a..b", "", BindMount, s.root + "/a..b", ""},
		{"under a missing root", s.second + "/x", "", BindMount, s.second + "/x", ""},
		// A symlink or file at the name passes the string check; Ensure refuses it.
		{"symlink name, string check", s.rootLink + "/link-root", "", BindMount, s.root + "/link-root", ""},
		{"named volume", "pgdata", "", NamedVolume, "pgdata", ""},
		{"named volume punctuation", "my-vol_1.x", "", NamedVolume, "my-vol_1.x", ""},

		{"the root itself", s.rootLink, protocol.CodeForbidden, 0, "", "is the volume root " + s.rootLink + " itself"},
		{"the resolved root itself", s.root + "/", protocol.CodeForbidden, 0, "", "itself"},
		{"a missing root itself", s.second, protocol.CodeForbidden, 0, "", "itself"},
		{"nested", s.rootLink + "/data/app", protocol.CodeForbidden, 0, "", "nested deeper than one directory below the volume root " + s.rootLink},
		{"nested through a planted symlink", s.rootLink + "/link-root/etc", protocol.CodeForbidden, 0, "", "nested"},
		{"nested through an inner symlink", s.rootLink + "/link-in/app", protocol.CodeForbidden, 0, "", "nested"},
		{"nested missing", s.second + "/x/y", protocol.CodeForbidden, 0, "", "nested"},
		{"dotdot escape", s.rootLink + "/../outside", protocol.CodeForbidden, 0, "", "contains '..'"},
		{"dotdot that stays inside", s.rootLink + "/data/../data", protocol.CodeForbidden, 0, "", "contains '..'"},
		{"hidden name", s.rootLink + "/.git", protocol.CodeForbidden, 0, "", "not a plain directory name"},
		{"name with a space", s.rootLink + "/a b", protocol.CodeForbidden, 0, "", "not a plain directory name"},
		{"name starting with a dash", s.rootLink + "/-x", protocol.CodeForbidden, 0, "", "not a plain directory name"},
		{"name too long", s.rootLink + "/" + strings.Repeat("a", 256), protocol.CodeForbidden, 0, "", "at most 255 bytes"},
		{"outside every root", filepath.Join(s.dir, "outside"), protocol.CodeForbidden, 0, "", "is not under a volume root"},
		{"extra forbidden socket", s.sock, protocol.CodeForbidden, 0, "", "protected path " + s.sock},
		{"parent of forbidden socket", filepath.Dir(s.sock), protocol.CodeForbidden, 0, "", "protected path"},
		{"root dir", "/", protocol.CodeForbidden, 0, "", "the host's root directory"},
		{"root dir doubled", "//", protocol.CodeForbidden, 0, "", "the host's root directory"},
		{"docker socket", "/var/run/docker.sock", protocol.CodeForbidden, 0, "", "protected path"},
		{"run docker socket", "/run/docker.sock", protocol.CodeForbidden, 0, "", "protected path"},
		{"proc", "/proc", protocol.CodeForbidden, 0, "", "protected path"},
		{"inside proc", "/proc/1/root", protocol.CodeForbidden, 0, "", "protected path"},
		{"sys", "/sys/fs/cgroup", protocol.CodeForbidden, 0, "", "protected path"},
		{"etc", "/etc", protocol.CodeForbidden, 0, "", "is not under a volume root"},
		{"invisible root", s.hidden + "/web", protocol.CodeForbidden, 0, "",
			"volume root " + s.hidden + " is not mounted into the agent's container at the same path; add -v " + s.hidden + ":" + s.hidden + " (compose: volumes:, Helm: volumeRoots)"},

		{"empty", "", protocol.CodeInvalid, 0, "", ""},
		{"relative path", "data/app", protocol.CodeInvalid, 0, "", ""},
		{"dot relative", "./data", protocol.CodeInvalid, 0, "", ""},
		{"home relative", "~/data", protocol.CodeInvalid, 0, "", ""},
		{"single char name", "a", protocol.CodeInvalid, 0, "", ""},
		{"name starting with dash", "-vol", protocol.CodeInvalid, 0, "", ""},
		{"dotdot name", "..", protocol.CodeInvalid, 0, "", ""},
		{"NUL", s.rootLink + "/a\x00b", protocol.CodeInvalid, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := s.v.Check(tt.host)
			if tt.wantCode != "" {
				if err == nil {
					t.Fatalf("Check(%q) = %+v, want a %s error", tt.host, m, tt.wantCode)
				}
				if got := protocol.CodeOf(err); got != tt.wantCode {
					t.Fatalf("Check(%q) code %s (%v), want %s", tt.host, got, err, tt.wantCode)
				}
				if !strings.Contains(err.Error(), tt.wantText) {
					t.Errorf("Check(%q) error %q, want it to contain %q", tt.host, err, tt.wantText)
				}
				if tt.wantCode == protocol.CodeForbidden && tt.name != "invisible root" {
					if want := "bind sources must be one directory directly under a volume root, such as " + s.rootLink + "/web-1-data"; !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say what is allowed (%q)", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Check(%q): %v", tt.host, err)
			}
			if m.Kind != tt.wantKind || m.Source != tt.wantSource {
				t.Errorf("Check(%q) = %+v, want kind %d source %q", tt.host, m, tt.wantKind, tt.wantSource)
			}
			if m.Kind == BindMount && m.Source != m.Root+"/"+m.Name {
				t.Errorf("Check(%q) = %+v: source is not root/name", tt.host, m)
			}
		})
	}
}

func TestVolumesUncheckedRootIsUnavailable(t *testing.T) {
	root := t.TempDir()
	v, err := NewVolumes([]string{root})
	must(t, err)
	_, err = v.Check(root + "/x")
	if protocol.CodeOf(err) != protocol.CodeUnavailable {
		t.Fatalf("Check under an unchecked root: %v, want unavailable", err)
	}
	must(t, v.MarkVisible(root))
	if _, err := v.Check(root + "/x"); err != nil {
		t.Fatalf("Check after MarkVisible: %v", err)
	}
	if err := v.MarkVisible("/nowhere"); err == nil {
		t.Error("MarkVisible of an unknown root: want an error")
	}
}

func TestVolumesStatus(t *testing.T) {
	s := newSandbox(t)
	st := s.v.Status()
	if len(st) != 3 {
		t.Fatalf("Status() = %+v", st)
	}
	if !st[0].Checked || !st[0].Visible || st[0].Problem != "" || st[0].Resolved != s.root {
		t.Errorf("first root %+v", st[0])
	}
	want := "volume root " + s.hidden + " is not mounted into the agent's container at the same path; add -v " + s.hidden + ":" + s.hidden + " (compose: volumes:, Helm: volumeRoots)"
	if !st[2].Checked || st[2].Visible || st[2].Problem != want {
		t.Errorf("hidden root %+v, want problem %q", st[2], want)
	}
}

func TestVolumesErrorNamesPath(t *testing.T) {
	s := newSandbox(t)
	_, err := s.v.Check("/var/run/docker.sock")
	if err == nil || !strings.Contains(err.Error(), `"/var/run/docker.sock"`) {
		t.Fatalf("error %v does not name the refused path", err)
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %T is not a *protocol.Error", err)
	}
}

func TestVolumesWideRootStillProtects(t *testing.T) {
	// An operator may choose a broad root; the protected paths inside it and
	// their parents stay refused.
	v, err := NewVolumes([]string{"/var"})
	must(t, err)
	must(t, v.MarkVisible("/var"))
	for _, host := range []string{"/var/run/docker.sock", "/var/lib/docker/volumes/x", "/var/lib", "/var/run"} {
		if _, err := v.Check(host); protocol.CodeOf(err) != protocol.CodeForbidden {
			t.Errorf("Check(%q) = %v, want forbidden", host, err)
		}
	}
	if _, err := v.Check("/var/lormas-test-nonexistent"); err != nil {
		t.Errorf("Check of a plain directory under /var: %v", err)
	}
}

func TestNewVolumesRefusesBadRoots(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "a"), 0o755))
	must(t, os.Symlink(filepath.Join(dir, "a"), filepath.Join(dir, "link-to-a")))
	for _, tt := range []struct {
		roots []string
		want  string
	}{
		{nil, "no volume root"},
		{[]string{""}, "no volume root"},
		{[]string{"/"}, "whole host file system"},
		{[]string{"//"}, "whole host file system"},
		{[]string{"relative/dir"}, "not an absolute path"},
		{[]string{"/proc/volumes"}, "inside the protected path /proc"},
		{[]string{"/sys"}, "inside the protected path /sys"},
		{[]string{"/var/lib/docker/volumes"}, "inside the protected path /var/lib/docker"},
		{[]string{dir + "/a", dir + "/a/b"}, "nest"},
		{[]string{dir + "/a/b", dir + "/a"}, "nest"},
		{[]string{dir + "/a", dir + "/a/"}, "nest"},
		{[]string{dir + "/link-to-a/x", dir + "/a"}, "nest"},
	} {
		v, err := NewVolumes(tt.roots)
		if err == nil {
			t.Errorf("NewVolumes(%q) = %v, want an error", tt.roots, v.Roots())
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewVolumes(%q): %v, want it to contain %q", tt.roots, err, tt.want)
		}
	}
	if _, err := NewVolumes([]string{DefaultVolumeRoot}, "relative.sock"); err == nil {
		t.Error("NewVolumes with a relative forbidden path: want an error")
	}
	// Siblings with a common prefix do not nest.
	if _, err := NewVolumes([]string{dir + "/a", dir + "/ab"}); err != nil {
		t.Errorf("NewVolumes of siblings: %v", err)
	}
}

func TestNewVolumesRoots(t *testing.T) {
	v, err := NewVolumes([]string{" /srv/lormas/ ", "", "/data/vols"})
	must(t, err)
	var got []string
	for _, r := range v.Roots() {
		got = append(got, r.Path)
	}
	if want := "/srv/lormas,/data/vols"; strings.Join(got, ",") != want {
		t.Errorf("Roots() = %q, want %q", got, want)
	}
}

// TestVolumesProtect: H1. With VOLUME_ROOTS=/data and Docker's data root at
// /data/docker (or the agent's STATE_DIR at /data/lormas-agent), the code
// before approved binding /data/docker, and the workload then edited another
// container's hostconfig.json (root on the host) or read the node's key and
// token. Protected paths are refused by name, and so is the entry of the
// root on the way to a deeper one; a root inside a protected path is
// refused whole.
func TestVolumesProtect(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	inner := filepath.Join(dir, "var", "docker", "volumes")
	v, err := NewVolumes([]string{root, inner})
	must(t, err)
	must(t, v.MarkVisible(root))
	must(t, v.MarkVisible(inner))
	for _, host := range []string{root + "/docker", root + "/deep", root + "/lormas-agent", inner + "/x"} {
		if _, err := v.Check(host); err != nil {
			t.Fatalf("before Protect, Check(%q): %v", host, err)
		}
	}
	must(t, v.Protect("Docker's data root", root+"/docker", ""))
	must(t, v.Protect("the agent's state directory (STATE_DIR)", root+"/lormas-agent"))
	must(t, v.Protect("containerd's root", root+"/deep/containerd"))
	err = v.Protect("Docker's data root", filepath.Join(dir, "var", "docker"))
	if err == nil || !strings.Contains(err.Error(), "volume root "+inner+" lies inside the protected path "+filepath.Join(dir, "var", "docker")+" (Docker's data root)") {
		t.Errorf("Protect of a path holding a root: %v, want an error naming the root", err)
	}
	if err := v.Protect("x", "relative"); err == nil {
		t.Error("Protect of a relative path: no error")
	}
	for _, tt := range []struct{ host, want string }{
		{root + "/docker", "touches the protected path " + root + "/docker (Docker's data root)"},
		{root + "/docker/", "touches the protected path " + root + "/docker (Docker's data root)"},
		{root + "/lormas-agent", "touches the protected path " + root + "/lormas-agent (the agent's state directory (STATE_DIR))"},
		{root + "/deep", "touches the protected path " + root + "/deep/containerd (containerd's root)"},
		{inner + "/x", "touches the protected path " + filepath.Join(dir, "var", "docker") + " (Docker's data root)"},
	} {
		_, err := v.Check(tt.host)
		if protocol.CodeOf(err) != protocol.CodeForbidden || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%q) = %v, want forbidden: %q", tt.host, err, tt.want)
		}
	}
	if _, err := v.Check(root + "/web"); err != nil {
		t.Errorf("Check of another directory of the root: %v", err)
	}
	st := v.Status()
	if st[1].Visible || !strings.Contains(st[1].Problem, "lies inside the protected path") {
		t.Errorf("Status of the root inside a protected path: %+v", st[1])
	}
	// Said once: protecting the same path again is silent and harmless.
	must(t, v.Protect("Docker's data root", root+"/docker"))
}

// TestVolumesDefaultProtectsContainerd: containerd's state, like Docker's,
// is control of the host's containers.
func TestVolumesDefaultProtectsContainerd(t *testing.T) {
	v, err := NewVolumes([]string{"/var/lib"})
	must(t, err)
	must(t, v.MarkVisible("/var/lib"))
	for _, host := range []string{"/var/lib/containerd", "/var/lib/docker"} {
		if _, err := v.Check(host); protocol.CodeOf(err) != protocol.CodeForbidden || !strings.Contains(err.Error(), "protected path "+host) {
			t.Errorf("Check(%q) = %v, want forbidden naming it", host, err)
		}
	}
	if _, err := NewVolumes([]string{"/var/lib/containerd/x"}); err == nil {
		t.Error("a root inside /var/lib/containerd: no error")
	}
}
