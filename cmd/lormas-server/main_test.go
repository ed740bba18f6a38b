package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/testsupport"
)

func runCmd(ctx context.Context, args, environ []string) (code int, stdout, stderr string) {
	var out, errOut testsupport.Buffer
	code = run(ctx, args, environ, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runCmd(context.Background(), []string{"help"}, nil)
	if code != exitOK || !strings.Contains(out, "Usage:") || !strings.Contains(out, "LISTEN_ADDR") ||
		!strings.Contains(out, "NODE_TOKEN_TTL") || !strings.Contains(out, "ENROLLMENT_TOKEN_EXPORT_FILE") {
		t.Errorf("help = %d\n%s", code, out)
	}
	for i, l := range strings.Split(out, "\n") {
		if len(l) > 80 {
			t.Errorf("help line %d is %d columns wide: %q", i+1, len(l), l)
		}
	}
	code, out, _ = runCmd(context.Background(), []string{"version"}, nil)
	if code != exitOK || !strings.HasPrefix(out, "lormas-server dev (commit unknown, go") {
		t.Errorf("version = %d %q", code, out)
	}
	code, _, errOut := runCmd(context.Background(), []string{"frobnicate"}, nil)
	if code != exitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command = %d %q", code, errOut)
	}
}

func TestInvalidConfigExits2WithOneLinePerProblem(t *testing.T) {
	code, _, errOut := runCmd(context.Background(), nil, []string{
		"ADMIN_TOKEN=short", "COMMAND_TIMEOUT=later", "LOG_FORMAT=xml", "DATA_DIR=" + t.TempDir(),
	})
	if code != exitUsage {
		t.Fatalf("exit = %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 3 {
		t.Fatalf("stderr has %d lines, want 3:\n%s", len(lines), errOut)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "lormas-server: ") {
			t.Errorf("line %q lacks the program prefix", l)
		}
	}
	if strings.Contains(errOut, "short") {
		t.Errorf("stderr shows the secret value")
	}
}

var adminTokenLine = regexp.MustCompile(`ADMIN_TOKEN=(lormas_admin_\S+)`)

// The generated admin token can be found again (issue 11: the compose log
// carried the sentence, not the token): the first start writes it to
// DATA_DIR/admin-token (0600), says where, and never prints the token; the
// admin-token subcommand prints a token the server accepts; later starts
// print nothing and keep the file while it holds the token in use.
func TestGeneratedAdminTokenIsKeptInDataDir(t *testing.T) {
	dir := t.TempDir()
	addr := testsupport.FreeAddr(t)
	env := []string{"DATA_DIR=" + dir, "LISTEN_ADDR=" + addr, "LOG_FORMAT=json"}
	// A cancelled context starts the server and shuts it down at once.
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	code, _, first := runCmd(stopped, nil, env)
	if code != exitOK {
		t.Fatalf("first start = %d\n%s", code, first)
	}
	file := filepath.Join(dir, "admin-token")
	if !strings.Contains(first, "wrote it to "+file) || !strings.Contains(first, "lormas-server admin-token") ||
		!strings.Contains(first, "docker compose exec -T lormas-server lormas-server admin-token") {
		t.Errorf("first start does not say where the admin token is:\n%s", first)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, mode %v; want 0600", err, fi)
	}
	code, token, errOut := runCmd(context.Background(), []string{"admin-token"}, env)
	token = strings.TrimSpace(token)
	if code != exitOK || !strings.HasPrefix(token, "lormas_admin_") || strings.Contains(token, "\n") {
		t.Fatalf("admin-token = %d %q %q", code, token, errOut)
	}
	if strings.Contains(first, token) || adminTokenLine.MatchString(first) {
		t.Errorf("the admin token is in the server's output (log shipping keeps it):\n%s", first)
	}

	// The printed token is the one the server accepts.
	ctx, stop := context.WithCancel(context.Background())
	var second testsupport.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, env, &testsupport.Buffer{}, &second) }()
	waitHealthy(t, addr, &second)
	for tok, want := range map[string]int{token: http.StatusOK, token + "x": http.StatusUnauthorized} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /api/nodes with the printed token%s = %d, want %d", map[bool]string{true: "", false: " changed"}[tok == token], resp.StatusCode, want)
		}
	}
	stop()
	if code := <-done; code != exitOK {
		t.Fatalf("second start = %d\n%s", code, second.String())
	}
	if strings.Contains(second.String(), "admin-token") || strings.Contains(second.String(), token) {
		t.Errorf("second start mentioned the admin token again:\n%s", second.String())
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("second start removed the admin token file: %v", err)
	}

	// Configured, the token is printed as given.
	code, out, _ := runCmd(context.Background(), []string{"admin-token"}, append(env, "ADMIN_TOKEN=configured-admin-token-1"))
	if code != exitOK || out != "configured-admin-token-1\n" {
		t.Errorf("admin-token with ADMIN_TOKEN = %d %q", code, out)
	}
	code, _, third := runCmd(stopped, nil, append(env, "ADMIN_TOKEN=configured-admin-token-1"))
	if code != exitOK || strings.Contains(third, "configured-admin-token-1") || strings.Contains(third, "admin-token") {
		t.Errorf("start with ADMIN_TOKEN = %d and printed:\n%s", code, third)
	}

	// A file that no longer holds the token in use is removed, and the
	// subcommand says how to set a new one.
	if err := os.WriteFile(file, []byte("lormas_admin_not-the-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, out := runCmd(stopped, nil, env); code != exitOK {
		t.Fatalf("start = %d\n%s", code, out)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("stale admin token file kept: %v", err)
	}
	code, out, errOut = runCmd(context.Background(), []string{"admin-token"}, env)
	if code != exitFailure || out != "" || !strings.Contains(errOut, "no token in "+file) || !strings.Contains(errOut, "ADMIN_TOKEN") {
		t.Errorf("admin-token without the file = %d %q %q", code, out, errOut)
	}
}

// When DATA_DIR/admin-token cannot be written, the generated token is
// printed once instead of being lost.
func TestAdminTokenPrintedWhenItCannotBeKept(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "admin-token"), 0o700); err != nil { // a rename onto it fails
		t.Fatal(err)
	}
	env := []string{"DATA_DIR=" + dir, "LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=json"}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	code, _, first := runCmd(stopped, nil, env)
	m := adminTokenLine.FindStringSubmatch(first)
	if code != exitOK || m == nil {
		t.Fatalf("start = %d; no admin token printed:\n%s", code, first)
	}
	if n := strings.Count(first, m[1]); n != 1 {
		t.Errorf("admin token appears %d times, want once (never logged)", n)
	}
	code, _, second := runCmd(stopped, nil, env)
	if code != exitOK || strings.Contains(second, m[1]) {
		t.Errorf("second start = %d and printed the token again:\n%s", code, second)
	}
}

func TestEnrollmentTokenSubcommand(t *testing.T) {
	dir := t.TempDir()
	env := []string{"DATA_DIR=" + dir, "LISTEN_ADDR=127.0.0.1:0", "ADMIN_TOKEN=admin-token-for-the-test"}
	code, _, errOut := runCmd(context.Background(), []string{"enrollment-token"}, env)
	if code != exitFailure || !strings.Contains(errOut, "start the server first") {
		t.Errorf("before the first start = %d %q", code, errOut)
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if code, _, out := runCmd(stopped, nil, env); code != exitOK {
		t.Fatalf("start = %d\n%s", code, out)
	}
	code, out, _ := runCmd(context.Background(), []string{"enrollment-token"}, env)
	written, err := os.ReadFile(filepath.Join(dir, "enrollment-token"))
	if code != exitOK || err != nil || out != string(written) || !strings.HasPrefix(out, "lormas_enroll_") {
		t.Errorf("enrollment-token = %d %q, file %q %v", code, out, written, err)
	}
}

// waitHealthy waits until the server run by the test answers on addr.
func waitHealthy(t *testing.T, addr string, log *testsupport.Buffer) {
	t.Helper()
	testsupport.Eventually(t, testsupport.WaitLimit, func() error {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return fmt.Errorf("server did not come up: %w\n%s", err, log.String())
		}
		resp.Body.Close()
		return nil
	})
}

func TestServeHealthcheckAndGracefulStop(t *testing.T) {
	addr := testsupport.FreeAddr(t)
	env := []string{"DATA_DIR=" + filepath.Join(t.TempDir(), "data"), "LISTEN_ADDR=" + addr,
		"ADMIN_TOKEN=admin-token-for-the-test", "LOG_LEVEL=debug"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, env, &testsupport.Buffer{}, &stderr) }()
	waitHealthy(t, addr, &stderr)
	code, out, errOut := runCmd(context.Background(), []string{"healthcheck"}, []string{"LISTEN_ADDR=" + addr})
	if code != exitOK || !strings.Contains(out, "ok: http://"+addr+"/healthz") {
		t.Errorf("healthcheck = %d %q %q", code, out, errOut)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/nodes", nil)
	req.Header.Set("Authorization", "Bearer admin-token-for-the-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/nodes = %v %v", resp, err)
	}
	resp.Body.Close()

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit after SIGTERM-equivalent = %d\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server did not stop")
	}
	if strings.Contains(stderr.String(), "admin-token-for-the-test") {
		t.Errorf("the admin token was logged")
	}
	code, _, errOut = runCmd(context.Background(), []string{"healthcheck", "-timeout", "1s"}, []string{"LISTEN_ADDR=" + addr})
	if code != exitFailure {
		t.Errorf("healthcheck of a stopped server = %d %q, want 1", code, errOut)
	}
}

// The healthcheck's exit codes and output: 0 and "ok: URL" on 200, 1 and
// the answer on another status, 2 for a URL that does not parse.
func TestHealthcheckOutput(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy {
			http.Error(w, `{"error":"database: locked"}`, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	defer srv.Close()
	url := srv.URL + "/healthz"
	if code, out, errOut := runCmd(context.Background(), []string{"healthcheck", "-url", url}, nil); code != exitOK || out != "ok: "+url+"\n" || errOut != "" {
		t.Errorf("healthy: %d %q %q", code, out, errOut)
	}
	healthy = false
	code, out, errOut := runCmd(context.Background(), []string{"healthcheck", "-url", url}, nil)
	if want := "lormas-server healthcheck: " + url + " answered 503 Service Unavailable: {\"error\":\"database: locked\"}\n\n"; code != exitFailure || out != "" || errOut != want {
		t.Errorf("unhealthy: %d %q %q, want 1 and %q", code, out, errOut, want)
	}
	if code, _, errOut := runCmd(context.Background(), []string{"healthcheck", "-url", "http://[::1"}, nil); code != exitUsage ||
		!strings.HasPrefix(errOut, "lormas-server healthcheck: parse ") {
		t.Errorf("unparsable URL: %d %q, want 2", code, errOut)
	}
}

func TestHealthURL(t *testing.T) {
	cases := []struct {
		addr string
		tls  bool
		want string
	}{
		{"", false, "http://127.0.0.1:3000/healthz"},
		{":8443", true, "https://127.0.0.1:8443/healthz"},
		{"0.0.0.0:3000", false, "http://127.0.0.1:3000/healthz"},
		{"[::]:3000", false, "http://127.0.0.1:3000/healthz"},
		{"10.0.0.5:80", false, "http://10.0.0.5:80/healthz"},
	}
	for _, c := range cases {
		got, err := healthURL(c.addr, c.tls)
		if err != nil || got != c.want {
			t.Errorf("healthURL(%q, %v) = %q, %v; want %q", c.addr, c.tls, got, err, c.want)
		}
	}
	if _, err := healthURL("nonsense", false); err == nil {
		t.Errorf("healthURL(nonsense) = nil error")
	}
}
