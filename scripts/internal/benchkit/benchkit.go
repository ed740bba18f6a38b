// Package benchkit holds what the measuring programs under scripts/ (bench,
// fleet, logbench, soak) share: readings of a process from /proc, a
// percentile, free loopback addresses, and building the project's commands,
// also as of an earlier git revision for a same-run baseline.
package benchkit

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RSSKiB reads the resident set size (VmRSS) of pid in KiB; 0 when it cannot.
func RSSKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb
		}
	}
	return 0
}

// CPUTime reads the user+system CPU time of pid from /proc/<pid>/stat; 0
// when it cannot.
func CPUTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// NumCPU counts the host's processors in /proc/cpuinfo.
func NumCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// Percentile returns the p-th percentile (nearest rank) of samples, which
// it does not modify; 0 for none.
func Percentile(samples []time.Duration, p int) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	sorted := slices.Sorted(slices.Values(samples))
	i := (len(sorted)*p + 99) / 100
	if i > 0 {
		i--
	}
	return sorted[i]
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FreeAddr returns a loopback TCP address that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// GoBuild builds pkg (relative to dir) into out as a static, stripped
// binary, as the release does.
func GoBuild(dir, out, pkg string) error {
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build %s in %s: %w", pkg, dir, err)
	}
	return nil
}

// BuildAt builds cmd/<name> as of the git revision rev, from an export of
// that revision under work (made once; the working tree is left alone), and
// returns the binary's path.
func BuildAt(work, rev, name string) (string, error) {
	src := filepath.Join(work, "src-"+ShortRev(rev))
	if _, err := os.Stat(src); err != nil {
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", err
		}
		archive := exec.Command("sh", "-c", `git archive --format=tar "$1" | tar -x -C "$2"`, "sh", rev, src)
		archive.Stderr = os.Stderr
		if err := archive.Run(); err != nil {
			return "", fmt.Errorf("export revision %s: %w", rev, err)
		}
	}
	bin := filepath.Join(work, name+"-"+ShortRev(rev))
	return bin, GoBuild(src, bin, "./cmd/"+name)
}

// ShortRev is git's short form of rev, or rev itself.
func ShortRev(rev string) string {
	out, err := exec.Command("git", "rev-parse", "--short", rev).Output()
	if err != nil {
		return rev
	}
	return strings.TrimSpace(string(out))
}
