package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The agent image runs as uid 65532. A token file written the usual way
// (root, 0600) and a Docker socket without the agent's group are the two
// permission errors a newcomer meets first: each must say exactly what to
// run. The built binary runs as uid 65532 (the test needs root to switch).
func TestPermissionErrorsSayWhatToRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run the agent as uid 65532 (CI=true: this test must run)")
		}
		t.Skip("SKIPPING: needs root to run the agent as uid 65532 (set CI=true to fail instead)")
	}
	const uid = 65532
	dir, err := os.MkdirTemp("", "lormas-agent-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "lormas-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	asAgent := func(env ...string) (int, string) {
		cmd := exec.Command(bin)
		cmd.Dir = dir
		cmd.Env = append([]string{"HEALTH_ADDR=", "STATE_DIR=" + filepath.Join(dir, "state"), "NODE_NAME=perm-test",
			"SERVER_URL=ws://127.0.0.1:1", "MAX_RECONNECT_ATTEMPTS=1", "RECONNECT_DELAY=10ms"}, env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return exitCode(err), string(out)
	}

	// Written the usual way: root's, mode 0600.
	tokenFile := filepath.Join(dir, "node-token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := asAgent("NODE_TOKEN_FILE=" + tokenFile)
	if code != exitUsage {
		t.Fatalf("exit %d, want 2 (invalid configuration)\n%s", code, out)
	}
	for _, want := range []string{
		"NODE_TOKEN_FILE: open " + tokenFile + ": permission denied",
		"runs as uid 65532",
		"sudo chown 65532 " + tokenFile + " && sudo chmod 0400 " + tokenFile,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// The fix, as printed, works; now the Docker socket refuses the agent.
	if err := os.Chown(tokenFile, uid, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tokenFile, 0o400); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(sock, 0o660); err != nil { // root:root, like a socket without the docker group
		t.Fatal(err)
	}
	code, out = asAgent("NODE_TOKEN_FILE="+tokenFile, "DOCKER_HOST=unix://"+sock)
	if code != exitFailure {
		t.Errorf("exit %d, want 1 (reconnect attempts exhausted)\n%s", code, out)
	}
	for _, want := range []string{"Docker socket not usable", "permission denied on " + sock, "--group-add 0", "lormas-agent doctor"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, testToken) {
		t.Error("the token is in the output")
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
