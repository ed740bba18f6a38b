package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestPlantedDotEnvRefused: a .env that someone else can write, in the
// agent's working directory, pointing the agent and its token at another
// server. Before, the agent read it and dialled that server with the
// token; now it refuses to start (status 2) with one line naming the file
// and the fix, and its healthcheck does not take HEALTH_ADDR from it.
func TestPlantedDotEnvRefused(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	path := filepath.Join(dir, ".env")
	planted := "SERVER_URL=ws://" + testsupport.FreeAddr(t) + "\nNODE_TOKEN=" + testToken + "\nHEALTH_ADDR=" + testsupport.FreeAddr(t) + "\n"
	if err := os.WriteFile(path, []byte(planted), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	env := []string{"STATE_DIR=" + filepath.Join(dir, "state"), "MAX_RECONNECT_ATTEMPTS=1", "HEALTH_ADDR="}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr testsupport.Buffer
	code := run(ctx, nil, env, &stdout, &stderr)
	if code != exitUsage {
		t.Fatalf("exit %d, want 2\n%s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], path) || !strings.Contains(lines[1], "chmod go-w "+path) {
		t.Errorf("stderr %q, want the heading and one line naming %s and chmod go-w", lines, path)
	}
	if strings.Contains(stdout.String()+stderr.String(), testToken) {
		t.Error("token in output")
	}

	var hcOut, hcErr testsupport.Buffer
	code = run(ctx, []string{"healthcheck"}, nil, &hcOut, &hcErr)
	out, errOut := hcOut.String(), hcErr.String()
	if code != exitFailure || !strings.Contains(errOut, "chmod go-w") || strings.Contains(out+errOut, testToken) {
		t.Errorf("healthcheck with the planted .env: exit %d, stdout %q, stderr %q; want 1 naming the fix", code, out, errOut)
	}
}

// TestRunLogsDotEnvPath: the agent says at info which .env it read (the
// path, never a value).
func TestRunLogsDotEnvPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	path := filepath.Join(dir, ".env")
	content := "SERVER_URL=ws://" + testsupport.FreeAddr(t) + "\nNODE_TOKEN=" + testToken + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"STATE_DIR=" + filepath.Join(dir, "state"), "HEALTH_ADDR=", "LOG_FORMAT=json",
		"MAX_RECONNECT_ATTEMPTS=1", "RECONNECT_DELAY=10ms", "RECONNECT_MAX_DELAY=20ms",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr testsupport.Buffer
	if code := run(ctx, nil, env, &stdout, &stderr); code != exitFailure {
		t.Fatalf("exit %d, want 1 (no server)\n%s", code, stderr.String())
	}
	logs := stderr.String()
	want := `"msg":"configuration read from file","path":"` + path + `"`
	if !strings.Contains(logs, want) {
		t.Errorf("log lacks %s:\n%s", want, logs)
	}
	if strings.Contains(logs+stdout.String(), testToken) {
		t.Error("token in output")
	}
}

// TestDotEnvConfiguresLibraries: the settings of the libraries given only
// in .env reach them, with nothing written into the process environment:
// HOST_PROC (a fixture /proc whose uptime and memory the heartbeat then
// carries) and DOCKER_HOST (a socket nobody listens on, which the start-up
// check names).
func TestDotEnvConfiguresLibraries(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	proc := filepath.Join(dir, "proc")
	if err := os.Mkdir(proc, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"stat":    "cpu  100 0 100 800 0 0 0 0 0 0\n",
		"meminfo": "MemTotal:       2048000 kB\nMemFree:         512000 kB\nMemAvailable:   1024000 kB\n",
		"uptime":  "4242.50 100.00\n",
	} {
		if err := os.WriteFile(filepath.Join(proc, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "nobody.sock")
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: testToken})
	dotenv := "SERVER_URL=" + srv.URL() + "\nNODE_TOKEN=" + testToken + "\nHOST_PROC=" + proc + "\nDOCKER_HOST=unix://" + sock + "\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"HOST_PROC", "DOCKER_HOST"} {
		t.Setenv(k, "") // restored at the end
		os.Unsetenv(k)
	}
	env := []string{"STATE_DIR=" + filepath.Join(dir, "state"), "HEALTH_ADDR=", "LOG_FORMAT=json", "HEARTBEAT_INTERVAL=50ms"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, env, &stdout, &stderr) }()

	hb := srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
	if hb.Resources.UptimeSeconds != 4242 || hb.Resources.MemoryTotalBytes != 2048000*1024 {
		t.Errorf("heartbeat resources %+v, want the uptime and memory of the .env's HOST_PROC", hb.Resources)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), sock) {
		t.Errorf("the start-up Docker check did not use the .env's DOCKER_HOST %s:\n%s", sock, stderr.String())
	}
	for _, k := range []string{"HOST_PROC", "DOCKER_HOST", "NODE_TOKEN"} {
		if v, set := os.LookupEnv(k); set {
			t.Errorf("%s=%q was written into the process environment", k, v)
		}
	}
}
