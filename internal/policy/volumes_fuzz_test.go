package policy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// FuzzVolumesCheck checks the invariants of every answer: an approved bind is
// exactly <resolved root>/<name> with name one safe component (never a root
// itself, never nested), clear of the protected paths, under a root the agent
// sees, and approving it again gives the same mount; a named volume obeys
// Docker's name rule; a refusal is forbidden or invalid (unavailable only
// while a root is unchecked), never anything else.
func FuzzVolumesCheck(f *testing.F) {
	for _, seed := range []string{
		"/", "//", "/proc", "/proc/self/root", "/sys", "/dev/sda", "/etc/passwd",
		"/var/run/docker.sock", "/run/docker.sock", "/var/lib/docker",
		"ROOT/data", "ROOT/data/../../etc", "ROOT/..", "ROOT/./a//b/", "ROOT", "ROOT/",
		"ROOT/link-root", "ROOT/link-root/etc", "ROOT/link-in/app", "ROOT/dangling", "ROOT/.",
		"ROOT/data/app", "ROOT/a..b", "ROOT/.hidden", "ROOT/-x", "ROOT/a b", "LINK/data", "LINK",
		"SECOND", "SECOND/", "SECOND/x", "SECOND/x/y", "SECOND/../root", "HIDDEN/x", "HIDDEN",
		"pgdata", "a", "-x", "my_vol.1", "x/y", "", "..", ".", "~", "ROOT/\x00",
	} {
		f.Add(seed)
	}
	s := newSandbox(f)
	f.Fuzz(func(t *testing.T, host string) {
		host = strings.ReplaceAll(host, "ROOT", s.root)
		host = strings.ReplaceAll(host, "LINK", s.rootLink)
		host = strings.ReplaceAll(host, "SECOND", s.second)
		host = strings.ReplaceAll(host, "HIDDEN", s.hidden)
		m, err := s.v.Check(host)
		if err != nil {
			if c := protocol.CodeOf(err); c != protocol.CodeForbidden && c != protocol.CodeInvalid {
				t.Fatalf("Check(%q): code %s (%v)", host, c, err)
			}
			return
		}
		switch m.Kind {
		case NamedVolume:
			if m.Source != host || !volumeNameRE.MatchString(host) || m.Root != "" || m.Name != "" {
				t.Fatalf("Check(%q) approved named volume %+v", host, m)
			}
		case BindMount:
			if slices.Contains(strings.Split(host, "/"), "..") {
				t.Fatalf("Check(%q) approved a path with '..'", host)
			}
			if m.Source != m.Root+"/"+m.Name || filepath.Clean(m.Source) != m.Source {
				t.Fatalf("Check(%q) = %+v: source is not the clean <root>/<name>", host, m)
			}
			if !bindNameRE.MatchString(m.Name) || len(m.Name) > maxBindName || m.Name == "." || m.Name == ".." {
				t.Fatalf("Check(%q) approved the name %q", host, m.Name)
			}
			var root *rootState
			for _, r := range s.v.roots {
				if r.Resolved == m.Root {
					root = r
				}
				if m.Source == r.Resolved || m.Source == r.Path {
					t.Fatalf("Check(%q) approved the root %s itself", host, r.Path)
				}
			}
			if root == nil {
				t.Fatalf("Check(%q) = %+v: root is not a configured root", host, m)
			}
			if root.vis != visible {
				t.Fatalf("Check(%q) approved a bind under the root %s, which the agent does not see", host, root.Path)
			}
			if clean := filepath.Clean(host); clean != m.Source && clean != root.Path+"/"+m.Name {
				t.Fatalf("Check(%q) = %+v: not the path asked for", host, m)
			}
			if f := s.v.forbiddenBy(m.Source); f != "" {
				t.Fatalf("Check(%q) source %q touches %s", host, m.Source, f)
			}
			again, err := s.v.Check(m.Source)
			if err != nil || again != m {
				t.Fatalf("Check(%q) = %+v, but Check(source) = %+v, %v", host, m, again, err)
			}
		default:
			t.Fatalf("Check(%q) returned kind %d without an error", host, m.Kind)
		}
	})
}
