package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// sandbox makes a volume root with symlinks pointing in, out and nowhere, and
// a fake socket passed as an extra forbidden path.
type sandbox struct {
	dir, root, rootLink, sock string
	v                         *Volumes
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox{dir: dir, root: filepath.Join(dir, "root"), rootLink: filepath.Join(dir, "root-link")}
	s.sock = filepath.Join(s.root, "agent", "docker.sock")
	must(t, os.MkdirAll(filepath.Join(s.root, "data", "app"), 0o755))
	must(t, os.MkdirAll(filepath.Dir(s.sock), 0o755))
	must(t, os.WriteFile(s.sock, nil, 0o600))
	must(t, os.MkdirAll(filepath.Join(dir, "outside"), 0o755))
	must(t, os.Symlink("/etc", filepath.Join(s.root, "link-out")))
	must(t, os.Symlink(filepath.Join(dir, "outside"), filepath.Join(s.root, "link-outside")))
	must(t, os.Symlink("data", filepath.Join(s.root, "link-in")))
	must(t, os.Symlink(filepath.Join(s.root, "nothing"), filepath.Join(s.root, "dangling")))
	must(t, os.Symlink("..", filepath.Join(s.root, "up")))
	must(t, os.Symlink(s.root, s.rootLink))
	s.v, err = NewVolumes([]string{s.rootLink, filepath.Join(dir, "second-root-missing")}, s.sock)
	if err != nil {
		t.Fatalf("NewVolumes: %v", err)
	}
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
	second := filepath.Join(s.dir, "second-root-missing")
	tests := []struct {
		name       string
		host       string
		wantCode   protocol.Code // "" = allowed
		wantKind   MountKind
		wantSource string
	}{
		{"existing dir", s.root + "/data/app", "", BindMount, s.root + "/data/app"},
		{"missing dir under root", s.root + "/new/deep", "", BindMount, s.root + "/new/deep"},
		{"through the root's symlink", s.rootLink + "/data", "", BindMount, s.root + "/data"},
		{"trailing slash and double slash", s.root + "//data/app/", "", BindMount, s.root + "/data/app"},
		{"dot component", s.root + "/./data", "", BindMount, s.root + "/data"},
		{"symlink staying inside", s.root + "/link-in/app", "", BindMount, s.root + "/data/app"},
		{"missing root", second + "/x", "", BindMount, second + "/x"},
		{"named volume", "pgdata", "", NamedVolume, "pgdata"},
		{"named volume punctuation", "my-vol_1.x", "", NamedVolume, "my-vol_1.x"},

		{"a root itself", second, "", BindMount, second},
		{"a root holding the socket", s.root, protocol.CodeForbidden, 0, ""},
		{"the root with slash", s.rootLink + "/", protocol.CodeForbidden, 0, ""},
		{"dotdot escape", s.root + "/../outside", protocol.CodeForbidden, 0, ""},
		{"dotdot that stays inside", s.root + "/data/../data", protocol.CodeForbidden, 0, ""},
		{"symlink to /etc", s.root + "/link-out/passwd", protocol.CodeForbidden, 0, ""},
		{"symlink to a sibling dir", s.root + "/link-outside", protocol.CodeForbidden, 0, ""},
		{"symlink to parent", s.root + "/up/outside", protocol.CodeForbidden, 0, ""},
		{"dangling symlink", s.root + "/dangling", protocol.CodeForbidden, 0, ""},
		{"extra forbidden socket", s.sock, protocol.CodeForbidden, 0, ""},
		{"parent of forbidden socket", filepath.Dir(s.sock), protocol.CodeForbidden, 0, ""},
		{"outside every root", filepath.Join(s.dir, "outside"), protocol.CodeForbidden, 0, ""},
		{"root dir", "/", protocol.CodeForbidden, 0, ""},
		{"root dir doubled", "//", protocol.CodeForbidden, 0, ""},
		{"docker socket", "/var/run/docker.sock", protocol.CodeForbidden, 0, ""},
		{"run docker socket", "/run/docker.sock", protocol.CodeForbidden, 0, ""},
		{"proc", "/proc", protocol.CodeForbidden, 0, ""},
		{"inside proc", "/proc/1/root", protocol.CodeForbidden, 0, ""},
		{"sys", "/sys/fs/cgroup", protocol.CodeForbidden, 0, ""},
		{"etc", "/etc", protocol.CodeForbidden, 0, ""},

		{"empty", "", protocol.CodeInvalid, 0, ""},
		{"relative path", "data/app", protocol.CodeInvalid, 0, ""},
		{"dot relative", "./data", protocol.CodeInvalid, 0, ""},
		{"home relative", "~/data", protocol.CodeInvalid, 0, ""},
		{"single char name", "a", protocol.CodeInvalid, 0, ""},
		{"name starting with dash", "-vol", protocol.CodeInvalid, 0, ""},
		{"dotdot name", "..", protocol.CodeInvalid, 0, ""},
		{"NUL", s.root + "/a\x00b", protocol.CodeInvalid, 0, ""},
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
				if tt.wantCode == protocol.CodeForbidden && !strings.Contains(err.Error(), s.rootLink) {
					t.Errorf("error %q does not name the allowed roots", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check(%q): %v", tt.host, err)
			}
			if m.Kind != tt.wantKind || m.Source != tt.wantSource {
				t.Errorf("Check(%q) = %+v, want kind %d source %q", tt.host, m, tt.wantKind, tt.wantSource)
			}
		})
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
	if err != nil {
		t.Fatalf("NewVolumes(/var): %v", err)
	}
	for _, host := range []string{"/var/run/docker.sock", "/var/lib/docker/volumes/x", "/var/lib", "/var/run"} {
		if _, err := v.Check(host); protocol.CodeOf(err) != protocol.CodeForbidden {
			t.Errorf("Check(%q) = %v, want forbidden", host, err)
		}
	}
	if _, err := v.Check("/var/lormas-test-nonexistent/data"); err != nil {
		t.Errorf("Check of a plain path under /var: %v", err)
	}
}

func TestNewVolumesRefusesBadRoots(t *testing.T) {
	for _, roots := range [][]string{
		nil,
		{""},
		{"/"},
		{"//"},
		{"relative/dir"},
		{"/proc/volumes"},
		{"/sys"},
		{"/var/lib/docker/volumes"},
	} {
		if v, err := NewVolumes(roots); err == nil {
			t.Errorf("NewVolumes(%q) = %v, want an error", roots, v.Roots())
		}
	}
	if _, err := NewVolumes([]string{DefaultVolumeRoot}, "relative.sock"); err == nil {
		t.Error("NewVolumes with a relative forbidden path: want an error")
	}
}

func TestNewVolumesRoots(t *testing.T) {
	v, err := NewVolumes([]string{" /srv/lormas/ ", "", "/data/vols"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(v.Roots(), ",")
	if want := "/srv/lormas,/data/vols"; got != want {
		t.Errorf("Roots() = %q, want %q", got, want)
	}
}
