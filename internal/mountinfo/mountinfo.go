// Package mountinfo reads the kernel's mount tables (/proc/<pid>/mountinfo,
// proc(5)): which mount holds a path, where it comes from, and with which
// per-mount options (nosuid, nodev, ...). The Docker layer uses it to tell
// whether the agent sees the volume roots as the daemon does, the policy to
// audit the mounts the roots lie on.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Self is the agent's own mount table.
const Self = "/proc/self/mountinfo"

// Entry is one line of a mountinfo file.
type Entry struct {
	ID     int
	Root   string   // the path inside its file system that is mounted
	Point  string   // where it is mounted
	Opts   []string // per-mount options: rw, nosuid, nodev, noexec, relatime, ...
	FSType string
}

// Has reports whether the mount has the per-mount option opt (e.g. "nosuid").
func (e *Entry) Has(opt string) bool { return slices.Contains(e.Opts, opt) }

// Read parses the mount table at path.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse parses a mountinfo table:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Paths are unescaped (the kernel writes space, tab, newline and backslash
// as \ooo). Malformed lines are an error: a table that cannot be read whole
// proves nothing.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+1 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, line)
		}
		id, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: mount id %q: %w", n, f[0], err)
		}
		out = append(out, Entry{
			ID: id, Root: Unescape(f[3]), Point: Unescape(f[4]),
			Opts: strings.Split(f[5], ","), FSType: f[sep+1],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("mountinfo is empty")
	}
	return out, nil
}

// Unescape undoes the kernel's \ooo escapes.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Covering returns the mount that holds path (clean, absolute): the one with
// the longest mount point containing it, the last listed of equals (stacked
// mounts: the top one is seen). nil when none does.
func Covering(mounts []Entry, path string) *Entry {
	var best *Entry
	for i := range mounts {
		m := &mounts[i]
		if Within(path, filepath.Clean(m.Point)) && (best == nil || len(filepath.Clean(m.Point)) >= len(filepath.Clean(best.Point))) {
			best = m
		}
	}
	return best
}

// Within reports whether p is dir or lies inside it (both clean, absolute).
func Within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}
