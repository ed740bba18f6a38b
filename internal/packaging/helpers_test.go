package packaging

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// commandTimeout bounds one external tool run (helm, systemd-analyze, install.sh).
const commandTimeout = 2 * time.Minute

// repoRoot is the directory holding go.mod, found upwards from the test's
// working directory (the package directory under go test).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// unavailable fails the test under CI=true, where every packaging test must
// run, and skips it with a loud reason elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("packaging: "+format+" (CI=true: this test must run; see scripts/ci-tools.sh)", args...)
	}
	t.Skipf("packaging: SKIPPING: "+format+" (run scripts/ci-tools.sh; CI=true fails instead of skipping)", args...)
}

// requireTool returns the path of an external tool: $envVar when set, else
// the tool on PATH, else in Go's install directory (where scripts/ci-tools.sh
// puts helm). A missing tool fails under CI and skips elsewhere.
func requireTool(t testing.TB, name, envVar string) string {
	t.Helper()
	if envVar != "" {
		if p := os.Getenv(envVar); p != "" {
			if _, err := exec.LookPath(p); err != nil {
				unavailable(t, "%s=%s: %v", envVar, p, err)
			}
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range goBinDirs() {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	unavailable(t, "%s is not installed (not on PATH, not in %v)", name, goBinDirs())
	return ""
}

var goBinDirsOnce = sync.OnceValue(func() []string {
	var dirs []string
	for _, v := range []string{"GOBIN", "GOPATH"} {
		out, err := exec.Command("go", "env", v).Output()
		if err != nil {
			continue
		}
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if d == "" {
				continue
			}
			if v == "GOPATH" {
				d = filepath.Join(d, "bin")
			}
			dirs = append(dirs, d)
		}
	}
	return dirs
})

func goBinDirs() []string { return goBinDirsOnce() }

// result is the outcome of one external command.
type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("error: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}

// run runs name with args in dir, with env added to the test's environment,
// and returns what it printed; it never fails the test itself.
func run(ctx context.Context, dir string, env []string, name string, args ...string) result {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

func contextWithTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), commandTimeout)
}

// mustRun is run that fails the test when the command fails.
func mustRun(t testing.TB, dir string, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	r := run(ctx, dir, env, name, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %s", filepath.Base(name), strings.Join(args, " "), r)
	}
	return r
}

// exitCode is the exit status of a finished command, -1 when it did not exit.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// uniqueName returns prefix plus random hex, for Docker objects and Compose
// projects that must not collide with another test run on the same daemon.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// randomToken returns a random secret of 32 hex characters.
func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
