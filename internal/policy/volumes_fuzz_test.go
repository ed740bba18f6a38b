package policy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// FuzzVolumesCheck checks the invariants of every answer: an approved bind is
// a clean absolute path that is a root or lies inside one, clear of the protected
// paths, and approving it again gives the same source; a named volume obeys
// Docker's name rule; a refusal is forbidden or invalid, never anything else.
func FuzzVolumesCheck(f *testing.F) {
	for _, seed := range []string{
		"/", "//", "/proc", "/proc/self/root", "/sys", "/dev/sda", "/etc/passwd",
		"/var/run/docker.sock", "/run/docker.sock", "/var/lib/docker",
		"ROOT/data", "ROOT/data/../../etc", "ROOT/..", "ROOT/./a//b/", "ROOT",
		"ROOT/link-out/passwd", "ROOT/link-in/app", "ROOT/dangling", "ROOT/up/outside",
		"ROOT/agent/docker.sock", "ROOT/agent", "ROOT/link-in/../link-out",
		"SECOND", "SECOND/", "SECOND/x", "SECOND/../root",
		"pgdata", "a", "-x", "my_vol.1", "x/y", "", "..", ".", "~", "ROOT/\x00",
	} {
		f.Add(seed)
	}
	s := newSandbox(f)
	f.Fuzz(func(t *testing.T, host string) {
		host = strings.ReplaceAll(host, "ROOT", s.root)
		host = strings.ReplaceAll(host, "SECOND", filepath.Join(s.dir, "second-root-missing"))
		m, err := s.v.Check(host)
		if err != nil {
			if c := protocol.CodeOf(err); c != protocol.CodeForbidden && c != protocol.CodeInvalid {
				t.Fatalf("Check(%q): code %s (%v)", host, c, err)
			}
			return
		}
		switch m.Kind {
		case NamedVolume:
			if m.Source != host || !volumeNameRE.MatchString(host) {
				t.Fatalf("Check(%q) approved named volume %q", host, m.Source)
			}
		case BindMount:
			src := m.Source
			if !filepath.IsAbs(src) || filepath.Clean(src) != src {
				t.Fatalf("Check(%q) source %q is not clean and absolute", host, src)
			}
			if slices.Contains(strings.Split(host, "/"), "..") {
				t.Fatalf("Check(%q) approved a path with '..'", host)
			}
			inside := false
			for _, root := range s.v.roots {
				inside = inside || src == root || strings.HasPrefix(src, root+"/")
			}
			if !inside {
				t.Fatalf("Check(%q) source %q is not a root or inside one %q", host, src, s.v.roots)
			}
			if f := s.v.forbiddenBy(src); f != "" {
				t.Fatalf("Check(%q) source %q touches %s", host, src, f)
			}
			again, err := s.v.Check(src)
			if err != nil || again != m {
				t.Fatalf("Check(%q) = %+v, but Check(source) = %+v, %v", host, m, again, err)
			}
		default:
			t.Fatalf("Check(%q) returned kind %d without an error", host, m.Kind)
		}
	})
}
