package policy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func TestVolumesEnsure(t *testing.T) {
	s := newSandbox(t)
	tests := []struct {
		name     string
		host     string
		wantCode protocol.Code
		wantText string
	}{
		{"existing dir", s.rootLink + "/data", "", ""},
		{"new dir", s.rootLink + "/fresh", "", ""},
		{"new dir in a missing root", s.second + "/x", "", ""},
		{"symlink to / at the name", s.rootLink + "/link-root", protocol.CodeForbidden, `is a symbolic link (to "/")`},
		{"symlink inside the root", s.rootLink + "/link-in", protocol.CodeForbidden, "is a symbolic link"},
		{"dangling symlink", s.rootLink + "/dangling", protocol.CodeForbidden, "is a symbolic link"},
		{"file at the name", s.rootLink + "/file", protocol.CodeForbidden, "exists and is not a directory (a regular file)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := s.v.Check(tt.host)
			if err != nil {
				t.Fatalf("Check(%q): %v", tt.host, err)
			}
			err = s.v.Ensure(m)
			if tt.wantCode != "" {
				if protocol.CodeOf(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("Ensure(%q) = %v, want %s containing %q", tt.host, err, tt.wantCode, tt.wantText)
				}
				if !strings.Contains(err.Error(), m.Source) {
					t.Errorf("error %q does not name %s", err, m.Source)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ensure(%q): %v", tt.host, err)
			}
			fi, err := os.Lstat(m.Source)
			if err != nil || !fi.IsDir() {
				t.Fatalf("after Ensure, %s: %v, %v", m.Source, fi, err)
			}
			if err := s.v.Ensure(m); err != nil {
				t.Errorf("Ensure again: %v", err)
			}
		})
	}
	// The symlink target was not touched.
	if fi, err := os.Lstat(filepath.Join(s.root, "link-root")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link-root changed: %v %v", fi, err)
	}
}

func TestVolumesEnsureMode(t *testing.T) {
	root := t.TempDir()
	v, err := NewVolumes([]string{root})
	must(t, err)
	must(t, v.MarkVisible(root))
	old := umask(0o077)
	defer umask(old)
	m, err := v.Check(root + "/d")
	must(t, err)
	must(t, v.Ensure(m))
	fi, err := os.Stat(m.Source)
	must(t, err)
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755 whatever the umask", fi.Mode().Perm())
	}
}

// TestVolumesEnsureNotWritable runs Ensure as a user that may not write the
// root (as root, it runs itself again as nobody): the error is forbidden,
// wraps ErrRootNotWritable and says how to fix it. Also when that user may
// not even look into the root (0700, another user's), where the code before
// answered internal ("check the bind source: permission denied") and the
// Docker layer never tried the daemon.
func TestVolumesEnsureNotWritable(t *testing.T) {
	if roots := os.Getenv("LORMAS_TEST_READONLY_ROOT"); roots != "" {
		for _, root := range strings.Split(roots, ",") {
			ensureNotWritable(t, root)
		}
		return
	}
	base, err := os.MkdirTemp("", "lormas-policy-")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	must(t, os.Chmod(base, 0o755))
	readOnly, private := filepath.Join(base, "ro"), filepath.Join(base, "private")
	must(t, os.Mkdir(readOnly, 0o755))
	must(t, os.Mkdir(private, 0o755))
	if os.Geteuid() != 0 {
		must(t, os.Chmod(readOnly, 0o555))
		must(t, os.Chmod(private, 0o200)) // writable, not searchable
		t.Cleanup(func() { _ = os.Chmod(readOnly, 0o755); _ = os.Chmod(private, 0o755) })
		ensureNotWritable(t, readOnly)
		ensureNotWritable(t, private)
		return
	}
	must(t, os.Chmod(private, 0o700))
	// The test binary's own directory is private: run a copy.
	bin := filepath.Join(t.TempDir(), "policy.test")
	data, err := os.ReadFile(os.Args[0])
	must(t, err)
	must(t, os.WriteFile(bin, data, 0o755))
	must(t, os.Chmod(filepath.Dir(bin), 0o755))
	must(t, os.Chmod(filepath.Dir(filepath.Dir(bin)), 0o755))
	cmd := exec.Command(bin, "-test.run=^TestVolumesEnsureNotWritable$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "LORMAS_TEST_READONLY_ROOT="+readOnly+","+private)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	for _, root := range []string{readOnly, private} {
		if _, err := os.Lstat(filepath.Join(root, "d")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s/d exists after the refused Ensure: %v", root, err)
		}
	}
}

func ensureNotWritable(t *testing.T, root string) {
	t.Helper()
	v, err := NewVolumes([]string{root})
	must(t, err)
	must(t, v.MarkVisible(root))
	m, err := v.Check(root + "/d")
	must(t, err)
	err = v.Ensure(m)
	if !errors.Is(err, ErrRootNotWritable) || protocol.CodeOf(err) != protocol.CodeForbidden {
		t.Fatalf("Ensure in the root %s the agent may not write: %v, want forbidden wrapping ErrRootNotWritable", root, err)
	}
	if want := "chown " + strconv.Itoa(os.Geteuid()) + " " + root; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func umask(m int) int { return syscall.Umask(m) }

func TestVolumesEnsureRefusesForeignMount(t *testing.T) {
	s := newSandbox(t)
	for _, m := range []Mount{
		{Kind: BindMount, Source: "/etc", Root: "/", Name: "etc"},
		{Kind: BindMount, Source: s.root + "/a/b", Root: s.root, Name: "a/b"},
		{Kind: BindMount, Source: s.root + "/..", Root: s.root, Name: ".."},
	} {
		if err := s.v.Ensure(m); protocol.CodeOf(err) != protocol.CodeInternal {
			t.Errorf("Ensure(%+v) = %v, want internal (not approved)", m, err)
		}
	}
	if err := s.v.Ensure(Mount{Kind: NamedVolume, Source: "pgdata"}); err != nil {
		t.Errorf("Ensure of a named volume: %v", err)
	}
}

// auditEnv makes a volume root <dir>/up/root (mode 0700) whose parents down
// from "/" are all searchable, and a mount table that puts <dir>/up on a
// nosuid,nodev mount: Audit has nothing to say about it.
type auditEnv struct {
	dir, up, root, table string
}

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	must(t, err)
	// Searchable parents: t.TempDir's own parent is private.
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		must(t, os.Chmod(d, 0o755))
	}
	e := &auditEnv{dir: base, up: filepath.Join(base, "up"), root: filepath.Join(base, "up", "root"), table: filepath.Join(base, "mountinfo")}
	must(t, os.MkdirAll(e.root, 0o755))
	must(t, os.Chmod(e.root, 0o700))
	e.mounts("rw,nosuid,nodev,relatime")
	return e
}

// mounts writes the mount table: "/" without nosuid,nodev, e.up with opts.
func (e *auditEnv) mounts(opts string) {
	table := "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"40 22 8:17 / " + e.up + " " + opts + " shared:20 - xfs /dev/sdb1 rw\n"
	if err := os.WriteFile(e.table, []byte(table), 0o644); err != nil {
		panic(err)
	}
}

func (e *auditEnv) audit(t *testing.T, roots ...string) []string {
	t.Helper()
	v, err := NewVolumes(roots)
	must(t, err)
	v.mountTable = e.table
	return v.Audit()
}

// wantWarnings checks that got holds exactly one warning containing each of
// want, and nothing else.
func wantWarnings(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("Audit() = %q, want %d warnings: %q", got, len(want), want)
		return
	}
	for _, w := range want {
		n := 0
		for _, g := range got {
			if strings.Contains(g, w) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("Audit() = %q: %d warnings contain %q, want 1", got, n, w)
		}
	}
}

func TestVolumesAudit(t *testing.T) {
	t.Run("private root on a nosuid,nodev mount", func(t *testing.T) {
		e := newAuditEnv(t)
		wantWarnings(t, e.audit(t, e.root, filepath.Join(e.up, "missing")))
	})
	t.Run("writable by others", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.root, 0o777))
		wantWarnings(t, e.audit(t, e.root),
			"volume root "+e.root+" is writable by its group or others (mode 0777)",
			"volume root "+e.root+" can be entered by every host user (mode 0777")
	})
	// M1: every host user can walk into a 0755 root and use what a root
	// workload left in its directory.
	t.Run("entered by every host user", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.root, 0o755))
		wantWarnings(t, e.audit(t, e.root), "volume root "+e.root+" can be entered by every host user (mode 0755, and every directory above it is searchable)")
	})
	t.Run("0755 root behind a private parent", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.root, 0o755))
		must(t, os.Chmod(e.up, 0o700))
		wantWarnings(t, e.audit(t, e.root))
	})
	t.Run("mount without nosuid,nodev", func(t *testing.T) {
		e := newAuditEnv(t)
		e.mounts("rw,nosuid,relatime")
		wantWarnings(t, e.audit(t, e.root, filepath.Join(e.up, "missing")),
			"volume root "+e.root+" lies on the mount at "+e.up+" without nosuid,nodev (options rw,nosuid,relatime)",
			"volume root "+filepath.Join(e.up, "missing")+" lies on the mount at "+e.up)
	})
	t.Run("unreadable mount table", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Remove(e.table))
		wantWarnings(t, e.audit(t, e.root), "cannot check the mount options of the volume roots")
	})
	t.Run("not a directory", func(t *testing.T) {
		e := newAuditEnv(t)
		f := filepath.Join(e.up, "file")
		must(t, os.WriteFile(f, nil, 0o600))
		wantWarnings(t, e.audit(t, f), "volume root "+f+" is not a directory (a regular file)")
	})
	// L2: whoever may rename an entry of a directory above the root can
	// swap the root itself between Ensure and Docker's start.
	t.Run("parent writable by others", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.up, 0o777))
		wantWarnings(t, e.audit(t, e.root), "directory "+e.up+", above the volume root "+e.root+", is writable by its group or others without the sticky bit (mode 0777)")
	})
	t.Run("grandparent group-writable", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.dir, 0o775))
		wantWarnings(t, e.audit(t, e.root), "directory "+e.dir+", above the volume root "+e.root+", is writable by its group or others without the sticky bit (mode 0775)")
	})
	t.Run("parent writable by others with the sticky bit", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.up, os.ModeSticky|0o777))
		wantWarnings(t, e.audit(t, e.root))
	})
	t.Run("parent of a missing root", func(t *testing.T) {
		e := newAuditEnv(t)
		must(t, os.Chmod(e.up, 0o777))
		wantWarnings(t, e.audit(t, filepath.Join(e.up, "a", "b")), "directory "+e.up+", above the volume root "+filepath.Join(e.up, "a", "b"))
	})
}

// TestVolumesAuditForeignParent: a parent of the root owned by another user
// (as root the test gives it to nobody; otherwise it judges as if the agent
// were another user than the test's).
func TestVolumesAuditForeignParent(t *testing.T) {
	e := newAuditEnv(t)
	v, err := NewVolumes([]string{e.root})
	must(t, err)
	euid, owner := uint32(os.Geteuid()), uint32(os.Geteuid())
	if euid == 0 {
		owner = 65534
		must(t, os.Chown(e.up, int(owner), int(owner)))
	} else {
		euid = 4242
	}
	got := auditParents(v.roots[0], euid)
	wantWarnings(t, got, "directory "+e.up+", above the volume root "+e.root+", is owned by uid "+strconv.Itoa(int(owner))+", neither root nor the agent's user")
	if os.Geteuid() == 0 {
		v.mountTable = e.table
		wantWarnings(t, v.Audit(), "directory "+e.up+", above the volume root "+e.root+", is owned by uid 65534")
	}
}

// TestVolumesRootCreatedPrivate: a missing root is made 0700 whatever the
// umask, and its bind directories 0755 (for the container's non-root users).
func TestVolumesRootCreatedPrivate(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o077} {
		e := newAuditEnv(t)
		root := filepath.Join(e.up, "new", "volumes")
		v, err := NewVolumes([]string{root})
		must(t, err)
		must(t, v.MarkVisible(root))
		m, err := v.Check(root + "/web")
		must(t, err)
		old := umask(mask)
		err = v.Ensure(m)
		umask(old)
		must(t, err)
		for _, c := range []struct {
			path string
			want os.FileMode
		}{{root, 0o700}, {root + "/web", 0o755}} {
			fi, err := os.Stat(c.path)
			must(t, err)
			if fi.Mode().Perm() != c.want {
				t.Errorf("umask %04o: %s mode %v, want %v", mask, c.path, fi.Mode().Perm(), c.want)
			}
		}
		v.mountTable = e.table
		wantWarnings(t, v.Audit())
	}
}
