package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/testsupport"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// The fast tier (go test -short ./...) builds nothing.
		fmt.Println("e2e: short mode: skipping the end-to-end tests (they build and run the binaries)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "lormas-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	for _, name := range []string{"lormas-agent", "lormas-server"} {
		cmd := exec.Command("go", "build", "-race", "-ldflags", "-X main.version=e2e-test", "-o", filepath.Join(dir, name), "../../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n", name, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary with its combined output captured.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  *testsupport.Buffer
	done chan struct{}
	err  error
}

// start runs binary name with exactly env (plus PATH and HOME) in dir.
func start(t testing.TB, name, dir string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name))
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LOG_FORMAT=json", "LOG_LEVEL=debug"}, env...)
	p := &proc{t: t, name: name, cmd: cmd, out: &testsupport.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out)
		}
	})
	return p
}

// kill stops the process hard if it still runs.
func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// signal sends sig and waits up to d for the exit; it returns the exit code.
func (p *proc) stop(sig syscall.Signal, d time.Duration) int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %v after %v", p.name, d, sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitOutput waits until the output contains s.
func (p *proc) waitOutput(s string, d time.Duration) {
	p.t.Helper()
	testsupport.Eventually(p.t, d, func() error {
		if strings.Contains(p.out.String(), s) {
			return nil
		}
		return fmt.Errorf("%s output does not contain %q", p.name, s)
	})
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
