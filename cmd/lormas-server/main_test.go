package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe output sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runCmd(ctx context.Context, args, environ []string) (code int, stdout, stderr string) {
	var out, errOut syncBuffer
	code = run(ctx, args, environ, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runCmd(context.Background(), []string{"help"}, nil)
	if code != exitOK || !strings.Contains(out, "Usage:") || !strings.Contains(out, "LISTEN_ADDR") ||
		!strings.Contains(out, "NODE_TOKEN_TTL") || !strings.Contains(out, "ENROLLMENT_TOKEN_EXPORT_FILE") {
		t.Errorf("help = %d\n%s", code, out)
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

func TestAdminTokenPrintedOnce(t *testing.T) {
	dir := t.TempDir()
	env := []string{"DATA_DIR=" + dir, "LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=json"}
	// A cancelled context starts the server and shuts it down at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code, _, first := runCmd(ctx, nil, env)
	if code != exitOK {
		t.Fatalf("first start = %d\n%s", code, first)
	}
	m := adminTokenLine.FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("first start printed no admin token:\n%s", first)
	}
	if n := strings.Count(first, m[1]); n != 1 {
		t.Errorf("admin token appears %d times in the first start's output, want once (never logged)", n)
	}
	if !strings.Contains(first, `"msg":"lormas-server listening"`) || !strings.Contains(first, `"msg":"lormas-server stopped"`) {
		t.Errorf("first start's log lacks listening/stopped:\n%s", first)
	}
	code, _, second := runCmd(ctx, nil, env)
	if code != exitOK {
		t.Fatalf("second start = %d\n%s", code, second)
	}
	if strings.Contains(second, "ADMIN_TOKEN=") || strings.Contains(second, m[1]) {
		t.Errorf("second start printed the admin token again:\n%s", second)
	}
	// Given in the environment, it is never printed.
	code, _, third := runCmd(ctx, nil, append(env, "ADMIN_TOKEN=configured-admin-token-1"))
	if code != exitOK || strings.Contains(third, "configured-admin-token-1") || strings.Contains(third, "ADMIN_TOKEN=") {
		t.Errorf("start with ADMIN_TOKEN = %d and printed:\n%s", code, third)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestServeHealthcheckAndGracefulStop(t *testing.T) {
	addr := freePort(t)
	env := []string{"DATA_DIR=" + filepath.Join(t.TempDir(), "data"), "LISTEN_ADDR=" + addr,
		"ADMIN_TOKEN=admin-token-for-the-test", "LOG_LEVEL=debug"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, env, &syncBuffer{}, &stderr) }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %v\n%s", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
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
