package dockertest_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/lormas/lormas-agent/internal/dockertest"
)

// TestWorkloadImage builds (or reuses) the workload image and runs it once to
// exit: its stdout, stderr and exit code are what the flags asked for.
func TestWorkloadImage(t *testing.T) {
	cli := dockertest.Require(t)
	img := dockertest.WorkloadImage(t)
	if again := dockertest.WorkloadImage(t); again != img {
		t.Fatalf("WorkloadImage changed within one process: %q then %q", img, again)
	}
	if !strings.HasPrefix(img, dockertest.WorkloadRepo+":") {
		t.Fatalf("image tag %q, want prefix %q", img, dockertest.WorkloadRepo+":")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "lormas-it-dockertest-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	resp, err := cli.ContainerCreate(ctx, &container.Config{
		Image: img,
		Cmd:   []string{"-lines", "3", "-exit", "7"},
		Env:   []string{"WORKLOAD_STDERR_LINES=2"},
	}, nil, nil, nil, name)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true})
	})
	waitC, errC := cli.ContainerWait(ctx, resp.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}
	select {
	case w := <-waitC:
		if w.StatusCode != 7 {
			t.Errorf("exit code %d, want 7", w.StatusCode)
		}
	case err := <-errC:
		t.Fatalf("wait: %v", err)
	}
	rc, err := cli.ContainerLogs(ctx, resp.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	defer rc.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, rc); err != nil {
		t.Fatalf("demux logs: %v", err)
	}
	if got, want := stdout.String(), "stdout line 1\nstdout line 2\nstdout line 3\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got, want := stderr.String(), "stderr line 1\nstderr line 2\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}
