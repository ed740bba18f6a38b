package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/config"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/health"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// testToken is a node JWT; no test output may contain it.
var testToken = func() string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"nodeId": "node-123", "sub": "node-123", "name": "n"}).SignedString([]byte("k"))
	if err != nil {
		panic(err)
	}
	return s
}()

// invoke runs the command in a temporary working directory (no stray
// .env) and returns its status and output.
func invoke(t *testing.T, ctx context.Context, args []string, environ ...string) (int, string, string) {
	t.Helper()
	t.Chdir(t.TempDir())
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, environ, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestHelpListsEveryVariable(t *testing.T) {
	code, out, _ := invoke(t, context.Background(), []string{"help"})
	if code != exitOK {
		t.Fatalf("help exited %d", code)
	}
	for _, v := range config.Variables() {
		if !strings.Contains(out, "\n"+v.Name) {
			t.Errorf("help lacks %s", v.Name)
		}
	}
	for _, want := range []string{"healthcheck", "doctor", "version", config.TextTable()} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	// Fit for an 80-column terminal (the README keeps the Markdown table).
	for i, l := range strings.Split(out, "\n") {
		if len(l) > 80 {
			t.Errorf("help line %d is %d columns wide: %q", i+1, len(l), l)
		}
	}
}

func TestVersion(t *testing.T) {
	old, oldCommit := version, commit
	version, commit = "1.2.3-test", "abc1234"
	defer func() { version, commit = old, oldCommit }()
	code, out, _ := invoke(t, context.Background(), []string{"version"})
	if code != exitOK {
		t.Fatalf("version exited %d", code)
	}
	for _, want := range []string{"lormas-agent 1.2.3-test", "commit abc1234", runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("version output %q lacks %q", out, want)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, errOut := invoke(t, context.Background(), []string{"frobnicate"})
	if code != exitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "Usage:") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestInvalidConfigExits2WithOneLinePerProblem(t *testing.T) {
	env := []string{
		"NODE_TOKEN=" + testToken,
		"NODE_TOKEN_FILE=/nonexistent/token", // two token sources
		"SERVER_URL=ftp://example.com",
		"LOG_LEVEL=chatty",
		"HEARTBEAT_INTERVAL=-5s",
		"MAX_MESSAGE_BYTES=1e99g",
		"VOLUME_ROOTS=relative",
		"STATE_DIR=" + t.TempDir(),
	}
	code, out, errOut := invoke(t, context.Background(), nil, env...)
	if code != exitUsage {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if lines[0] != "lormas-agent: invalid configuration:" {
		t.Errorf("first line %q", lines[0])
	}
	wantKeys := []string{"NODE_TOKEN", "SERVER_URL", "LOG_LEVEL", "HEARTBEAT_INTERVAL", "MAX_MESSAGE_BYTES", "VOLUME_ROOTS"}
	if len(lines)-1 != len(wantKeys) {
		t.Errorf("%d problem lines, want %d:\n%s", len(lines)-1, len(wantKeys), errOut)
	}
	for _, k := range wantKeys {
		found := false
		for _, l := range lines[1:] {
			found = found || strings.HasPrefix(strings.TrimSpace(l), k+": ")
		}
		if !found {
			t.Errorf("no problem line for %s:\n%s", k, errOut)
		}
	}
	if strings.Contains(out+errOut, testToken) {
		t.Error("token in output")
	}
}

func TestInvalidTLSFilesExit2(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("not a certificate"), 0o600)
	code, _, errOut := invoke(t, context.Background(), nil, "NODE_TOKEN="+testToken, "TLS_CA_FILE="+ca, "STATE_DIR="+dir)
	if code != exitUsage || !strings.Contains(errOut, "TLS") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestHealthcheck(t *testing.T) {
	var alive atomic.Bool
	alive.Store(true)
	srv := httptest.NewServer(health.NewServer(health.Options{Alive: func() error {
		if alive.Load() {
			return nil
		}
		return context.DeadlineExceeded
	}}).Handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := net.SplitHostPort(addr)
	ctx := context.Background()

	if code, out, errOut := invoke(t, ctx, []string{"healthcheck", "-addr", addr}); code != exitOK || out != "ok\n" {
		t.Errorf("-addr: exit %d %q %q", code, out, errOut)
	}
	// HEALTH_ADDR as configured for listening: ":PORT" is probed on loopback.
	if code, _, errOut := invoke(t, ctx, []string{"healthcheck"}, "HEALTH_ADDR=:"+port); code != exitOK {
		t.Errorf("HEALTH_ADDR=:%s: exit %d %q", port, code, errOut)
	}
	alive.Store(false)
	if code, _, errOut := invoke(t, ctx, []string{"healthcheck"}, "HEALTH_ADDR=:"+port); code != exitFailure || !strings.Contains(errOut, "503") {
		t.Errorf("unhealthy: exit %d %q", code, errOut)
	}
	if code, _, errOut := invoke(t, ctx, []string{"healthcheck"}, "HEALTH_ADDR="); code != exitFailure || !strings.Contains(errOut, "disabled") {
		t.Errorf("disabled: exit %d %q", code, errOut)
	}
	srv.Close()
	if code, _, _ := invoke(t, ctx, []string{"healthcheck", "-addr", addr}); code != exitFailure {
		t.Errorf("nothing listening: exit %d", code)
	}
}

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRunServesHealthAndStopsGracefully starts the agent against a server
// that does not exist: it keeps redialling, /healthz is ok, /readyz is not,
// and cancelling the context (SIGTERM) ends it with status 0. The token
// never appears in the debug log.
func TestRunServesHealthAndStopsGracefully(t *testing.T) {
	t.Chdir(t.TempDir())
	healthAddr := testsupport.FreeAddr(t)
	env := []string{
		"SERVER_URL=ws://" + testsupport.FreeAddr(t) + "/base/",
		"NODE_TOKEN=" + testToken,
		"STATE_DIR=" + t.TempDir(),
		"HEALTH_ADDR=" + healthAddr,
		"LOG_LEVEL=debug",
		"LOG_FORMAT=json",
		"RECONNECT_DELAY=50ms",
		"RECONNECT_MAX_DELAY=200ms",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, env, &stdout, &stderr) }()

	base := "http://" + healthAddr
	testsupport.WaitFor(t, "/healthz", func() bool { return status(base+"/healthz") == 200 })
	if got := status(base + "/readyz"); got != 503 {
		t.Errorf("/readyz while disconnected = %d, want 503", got)
	}
	testsupport.WaitFor(t, "a redial", func() bool {
		return strings.Contains(scrape(t, base), "lormas_agent_reconnects_total ") && !strings.Contains(scrape(t, base), "lormas_agent_reconnects_total 0")
	})
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d after cancel, want 0\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop after cancel")
	}
	logs := stderr.String()
	if strings.Contains(logs+stdout.String(), testToken) {
		t.Errorf("token in output:\n%s", logs)
	}
	var start map[string]any
	first, _, _ := strings.Cut(logs, "\n")
	if err := json.Unmarshal([]byte(first), &start); err != nil {
		t.Fatalf("first log line is not JSON: %q", first)
	}
	if start["msg"] != "lormas-agent starting" || start["node"] == "" || !strings.HasPrefix(start["server"].(string), "ws://127.0.0.1:") {
		t.Errorf("start line %v", start)
	}
	if status(base+"/healthz") != 0 {
		t.Error("health endpoint still up after exit")
	}
}

func scrape(t *testing.T, base string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

// TestMaxReconnectAttemptsExits1 gives up after the configured attempts.
func TestMaxReconnectAttemptsExits1(t *testing.T) {
	env := []string{
		"SERVER_URL=ws://" + testsupport.FreeAddr(t),
		"NODE_TOKEN=" + testToken,
		"STATE_DIR=" + t.TempDir(),
		"HEALTH_ADDR=",
		"MAX_RECONNECT_ATTEMPTS=2",
		"RECONNECT_DELAY=10ms",
		"RECONNECT_MAX_DELAY=20ms",
		"LOG_LEVEL=debug",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, out, errOut := invoke(t, ctx, nil, env...)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "MAX_RECONNECT_ATTEMPTS") {
		t.Errorf("no explanation in the log:\n%s", errOut)
	}
	if strings.Contains(out+errOut, testToken) {
		t.Error("token in output")
	}
}

// TestEnrollmentStoresToken enrolls against a fake server with a proof of
// a key it makes (0600 in a 0700 STATE_DIR), stores the issued token, does
// NOT enroll again when the server refuses that (unexpired) token, and the
// next start uses the stored token without the enrollment token.
func TestEnrollmentStoresToken(t *testing.T) {
	const enrollToken = "enroll-secret-0123456789"
	var enrollCalls, dials atomic.Int32
	var gotBody atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/nodes/enroll":
			enrollCalls.Add(1)
			if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer "+enrollToken {
				http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
				return
			}
			var body protocol.EnrollRequest
			json.NewDecoder(r.Body).Decode(&body)
			gotBody.Store(body)
			if enrollCalls.Load() == 1 { // the first attempt fails: the agent retries
				http.Error(w, `{"error":"busy"}`, http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"id": "node-123", "name": body.Name, "token": testToken})
		case "/api/ws/nodes":
			dials.Add(1)
			if r.Header.Get("Authorization") != "Bearer "+testToken {
				t.Errorf("dial without the enrolled token")
			}
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	state := filepath.Join(t.TempDir(), "state")
	common := []string{
		"SERVER_URL=" + srv.URL, "STATE_DIR=" + state, "NODE_NAME=edge-7", "HEALTH_ADDR=",
		"MAX_RECONNECT_ATTEMPTS=3", "RECONNECT_DELAY=10ms", "RECONNECT_MAX_DELAY=20ms", "LOG_LEVEL=debug",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, out, errOut := invoke(t, ctx, nil, append(common, "ENROLLMENT_TOKEN="+enrollToken)...)
	if code != exitFailure { // enrolled, then the (fake) server refuses every dial
		t.Fatalf("exit %d, want 1 after MAX_RECONNECT_ATTEMPTS\n%s", code, errOut)
	}
	// Two calls to enroll (one refused, one issuing the token); a refused
	// token that has not expired is never a reason to enroll again.
	if enrollCalls.Load() != 2 || dials.Load() < 3 {
		t.Errorf("enroll calls %d (want 2), dials %d (want 3 or more)", enrollCalls.Load(), dials.Load())
	}
	body, _ := gotBody.Load().(protocol.EnrollRequest)
	key, err := enroll.State{Dir: state}.Key()
	if err != nil {
		t.Fatalf("node key: %v", err)
	}
	pub := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	sig, _ := base64.StdEncoding.DecodeString(body.Signature)
	if body.Name != "edge-7" || body.PublicKey != pub ||
		!ed25519.Verify(key.Public().(ed25519.PublicKey), protocol.EnrollProofMessage(body.Name, body.PublicKey, body.Timestamp), sig) {
		t.Errorf("enrollment request %+v does not carry a valid proof of the stored key", body)
	}
	b, err := os.ReadFile(filepath.Join(state, "node-token"))
	if err != nil || strings.TrimSpace(string(b)) != testToken {
		t.Fatalf("stored token: %v", err)
	}
	for _, f := range []string{"node-token", "node-key"} {
		if st, _ := os.Stat(filepath.Join(state, f)); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode())
		}
	}
	if st, _ := os.Stat(state); st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", st.Mode())
	}
	for _, secret := range []string{testToken, enrollToken, body.Signature} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("secret in output:\n%s", errOut)
		}
	}
	if !strings.Contains(errOut, "does not enroll again by itself") {
		t.Errorf("the refusal does not tell the operator what to do:\n%s", errOut)
	}

	// Second start: no enrollment token at all, the stored token is used
	// (and, without an enrollment token, never replaced).
	before := enrollCalls.Load()
	code, _, errOut = invoke(t, ctx, nil, common...)
	if code != exitFailure || enrollCalls.Load() != before {
		t.Errorf("restart: exit %d, enroll calls %d -> %d (want no new enrollment)\n%s", code, before, enrollCalls.Load(), errOut)
	}
}

// TestBinaryVersionFromLdflags builds the command with -X ldflags.
func TestBinaryVersionFromLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "lormas-agent")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.version=9.8.7 -X main.commit=feedbeef", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "lormas-agent 9.8.7 (commit feedbeef, go") {
		t.Errorf("version output %q", out)
	}
	// The process exit status for invalid configuration is 2.
	cmd := exec.Command(bin)
	cmd.Env = []string{"LOG_LEVEL=nope", "NODE_TOKEN=" + testToken, "STATE_DIR=" + t.TempDir()}
	cmd.Dir = t.TempDir()
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("invalid config: %v\n%s", err, out)
	}
	if strings.Contains(string(out), testToken) {
		t.Error("token in output")
	}
}

// TestStaticTokenPrefersRefreshedToken: an agent configured with NODE_TOKEN
// whose token has expired dials with the token the server handed over in
// token_refresh and it kept in STATE_DIR/node-token.refreshed (same node,
// issued later, valid), and announces that it can keep such tokens.
func TestStaticTokenPrefersRefreshedToken(t *testing.T) {
	t.Chdir(t.TempDir())
	sign := func(iat, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"nodeId": "node-7", "iat": iat.Unix(), "exp": exp.Unix()}).SignedString([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expired := sign(time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	refreshed := sign(time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: refreshed})
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "node-token.refreshed"), []byte(refreshed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, nil, []string{"SERVER_URL=" + srv.URL(), "NODE_TOKEN=" + expired, "STATE_DIR=" + state,
			"HEALTH_ADDR=", "LOG_LEVEL=debug", "LOG_FORMAT=json"}, &stdout, &stderr)
	}()
	id := srv.Expect(protocol.TypeAgentIdentify).(protocol.AgentIdentify)
	if !slices.Contains(id.Capabilities, protocol.CapabilityTokenRefresh) {
		t.Errorf("capabilities %v lack token_refresh", id.Capabilities)
	}
	hb := srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
	if hb.NodeID != "node-7" {
		t.Errorf("heartbeat nodeId %q", hb.NodeID)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d\n%s", code, stderr.String())
	}
	for _, tok := range []string{expired, refreshed} {
		if strings.Contains(stdout.String()+stderr.String(), tok) {
			t.Errorf("a token in the output")
		}
	}
}
