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
// wraps ErrRootNotWritable and says how to fix it.
func TestVolumesEnsureNotWritable(t *testing.T) {
	root := os.Getenv("LORMAS_TEST_READONLY_ROOT")
	if root == "" {
		dir, err := os.MkdirTemp("", "lormas-policy-")
		must(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		must(t, os.Chmod(dir, 0o755))
		if os.Geteuid() != 0 {
			must(t, os.Chmod(dir, 0o555))
			t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
			ensureNotWritable(t, dir)
			return
		}
		// The test binary's own directory is private: run a copy.
		bin := filepath.Join(t.TempDir(), "policy.test")
		data, err := os.ReadFile(os.Args[0])
		must(t, err)
		must(t, os.WriteFile(bin, data, 0o755))
		must(t, os.Chmod(filepath.Dir(bin), 0o755))
		must(t, os.Chmod(filepath.Dir(filepath.Dir(bin)), 0o755))
		cmd := exec.Command(bin, "-test.run=^TestVolumesEnsureNotWritable$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LORMAS_TEST_READONLY_ROOT="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
		if _, err := os.Lstat(filepath.Join(dir, "d")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s/d exists after the refused Ensure: %v", dir, err)
		}
		return
	}
	ensureNotWritable(t, root)
}

func ensureNotWritable(t *testing.T, root string) {
	v, err := NewVolumes([]string{root})
	must(t, err)
	must(t, v.MarkVisible(root))
	m, err := v.Check(root + "/d")
	must(t, err)
	err = v.Ensure(m)
	if !errors.Is(err, ErrRootNotWritable) || protocol.CodeOf(err) != protocol.CodeForbidden {
		t.Fatalf("Ensure in a root the agent may not write: %v, want forbidden wrapping ErrRootNotWritable", err)
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

func TestVolumesAudit(t *testing.T) {
	dir := t.TempDir()
	tight, loose, missing := filepath.Join(dir, "tight"), filepath.Join(dir, "loose"), filepath.Join(dir, "missing")
	must(t, os.Mkdir(tight, 0o755))
	must(t, os.Mkdir(loose, 0o755))
	must(t, os.Chmod(loose, 0o777))
	v, err := NewVolumes([]string{tight, loose, missing})
	must(t, err)
	got := v.Audit()
	if len(got) != 1 || !strings.Contains(got[0], "volume root "+loose+" is writable by its group or others (mode 0777)") {
		t.Errorf("Audit() = %q, want one warning about %s", got, loose)
	}
}
