package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/docker"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/hostmetrics"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/transport"
)

const timeout = 5 * time.Second

func makeToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeServer is a Lormas server's node socket: it upgrades requests whose
// bearer token is good and answers 401 otherwise.
type fakeServer struct {
	*httptest.Server
	mu    sync.Mutex
	conns []*gws.Conn
	// ignoreProbe makes it a server that does not know doctor's probe.
	ignoreProbe bool
}

func newFakeServer(t *testing.T, good string, tlsOn bool) *fakeServer {
	fs := &fakeServer{}
	up := gws.NewUpgrader(&gws.BuiltinEventHandler{}, &gws.ServerOption{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/ws/nodes" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+good || r.URL.Query().Get("token") != good {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		fs.mu.Lock()
		if r.Header.Get(protocol.ProbeHeader) != "" && !fs.ignoreProbe {
			fs.mu.Unlock()
			_ = c.WriteClose(1000, []byte(protocol.ProbeCloseReason))
			return
		}
		fs.conns = append(fs.conns, c)
		fs.mu.Unlock()
		go c.ReadLoop()
	})
	if tlsOn {
		fs.Server = httptest.NewTLSServer(h)
	} else {
		fs.Server = httptest.NewServer(h)
	}
	t.Cleanup(func() {
		fs.mu.Lock()
		for _, c := range fs.conns {
			c.NetConn().Close()
		}
		fs.mu.Unlock()
		fs.Close()
	})
	return fs
}

func (fs *fakeServer) wsURL(t *testing.T) *url.URL {
	u, err := url.Parse(strings.Replace(strings.Replace(fs.URL, "https://", "wss://", 1), "http://", "ws://", 1))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCheckToken(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		token  string
		status Status
		detail string
	}{
		{"no expiry", makeToken(t, jwt.MapClaims{"nodeId": "n1", "sub": "n1"}), OK, `JWT for node "n1", no expiry`},
		{"sub only", makeToken(t, jwt.MapClaims{"sub": "n2"}), OK, `node "n2"`},
		{"valid exp", makeToken(t, jwt.MapClaims{"nodeId": "n1", "exp": now.Add(time.Hour).Unix()}), OK, "expires 2026-06-01T01:00:00Z"},
		{"expired", makeToken(t, jwt.MapClaims{"nodeId": "n1", "exp": now.Add(-time.Hour).Unix()}), Fail, "expired at 2026-05-31T23:00:00Z"},
		{"no id", makeToken(t, jwt.MapClaims{"name": "x"}), OK, "without nodeId"},
		{"garbage", "not-a-jwt-secret-value", Fail, "not a JWT"},
		{"bad base64", "aaa.bbb!.ccc", Fail, "not a JWT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := CheckToken(c.token, now)
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) {
				t.Errorf("got %s %q, want %s containing %q", r.Status, r.Detail, c.status, c.detail)
			}
			if r.Status == Fail && r.Fix == "" {
				t.Error("failure without a fix")
			}
			if strings.Contains(r.Detail+r.Fix, c.token) {
				t.Error("token in the result")
			}
		})
	}
}

func TestCheckUpgrade(t *testing.T) {
	good := makeToken(t, jwt.MapClaims{"nodeId": "n1"})
	srv := newFakeServer(t, good, false)
	u := srv.wsURL(t)
	ctx := context.Background()

	if r := CheckUpgrade(ctx, u, good, true, nil, transport.Direct, "test", timeout); r.Status != OK {
		t.Errorf("good token: %s %q", r.Status, r.Detail)
	} else if strings.Contains(r.Detail, good) {
		t.Errorf("token in detail %q", r.Detail)
	}
	bad := makeToken(t, jwt.MapClaims{"nodeId": "other"})
	r := CheckUpgrade(ctx, u, bad, true, nil, transport.Direct, "test", timeout)
	if r.Status != Fail || !strings.Contains(r.Detail, "401") || !strings.Contains(r.Fix, "PATCH /api/nodes/{id}/token") {
		t.Errorf("refused token: %s %q fix %q", r.Status, r.Detail, r.Fix)
	}
	if strings.Contains(r.Detail+r.Fix, bad) {
		t.Error("token in the result")
	}
	wrong := *u
	wrong.Path = "/elsewhere"
	if r := CheckUpgrade(ctx, &wrong, good, true, nil, transport.Direct, "test", timeout); r.Status != Fail || !strings.Contains(r.Fix, "404") {
		t.Errorf("wrong base path: %s %q fix %q", r.Status, r.Detail, r.Fix)
	}
	if r := CheckUpgrade(ctx, u, good, true, nil, transport.Direct, "test", timeout); !strings.Contains(r.Detail, "a running agent stays connected") {
		t.Errorf("probe answered: %s %q", r.Status, r.Detail)
	}
	srv.mu.Lock()
	srv.ignoreProbe = true
	srv.mu.Unlock()
	if r := CheckUpgrade(ctx, u, good, true, nil, transport.Direct, "test", timeout); r.Status != OK || !strings.Contains(r.Detail, "does not know doctor's probe") {
		t.Errorf("server without probes: %s %q", r.Status, r.Detail)
	}
	// NODE_TOKEN_IN_QUERY=false: the doctor dials as the agent would, with
	// no ?token=, so a server that reads only the query refuses it here
	// (this one wants both) instead of passing a check the agent then fails.
	if r := CheckUpgrade(ctx, u, good, false, nil, transport.Direct, "test", timeout); r.Status != Fail || !strings.Contains(r.Detail, "401") {
		t.Errorf("header only against a server that wants the query too: %s %q", r.Status, r.Detail)
	}
}

func TestCheckServerReachable(t *testing.T) {
	srv := newFakeServer(t, "x", false)
	if r := CheckServerReachable(context.Background(), srv.wsURL(t), transport.Direct, timeout); r.Status != OK {
		t.Errorf("running server: %s %q", r.Status, r.Detail)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	u, _ := url.Parse("ws://" + addr)
	r := CheckServerReachable(context.Background(), u, transport.Direct, timeout)
	if r.Status != Fail || !strings.Contains(r.Detail, "refused") || !strings.Contains(r.Fix, "SERVER_URL") {
		t.Errorf("closed port: %s %q fix %q", r.Status, r.Detail, r.Fix)
	}
	// The configured proxy (.env's HTTPS_PROXY, say) is the one connected
	// to, not the process environment's.
	proxy := func(*http.Request) (*url.URL, error) { return srv.wsURL(t), nil }
	if r := CheckServerReachable(context.Background(), u, proxy, timeout); r.Status != OK || !strings.Contains(r.Detail, "through proxy") {
		t.Errorf("through the configured proxy: %s %q", r.Status, r.Detail)
	}
}

func TestCheckTLS(t *testing.T) {
	good := makeToken(t, jwt.MapClaims{"nodeId": "n1"})
	srv := newFakeServer(t, good, true)
	u := srv.wsURL(t)
	ctx := context.Background()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	system, err := transport.TLSConfig("", "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	r := CheckTLS(ctx, u, system, transport.Direct, timeout)
	if r.Status != Fail || !strings.Contains(r.Fix, "TLS_CA_FILE") {
		t.Errorf("unknown CA: %s %q fix %q", r.Status, r.Detail, r.Fix)
	}

	withCA, err := transport.TLSConfig(caFile, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if r := CheckTLS(ctx, u, withCA, transport.Direct, timeout); r.Status != OK {
		t.Errorf("with TLS_CA_FILE: %s %q", r.Status, r.Detail)
	}
	// The upgrade check verifies the same way.
	if r := CheckUpgrade(ctx, u, good, true, withCA, transport.Direct, "test", timeout); r.Status != OK {
		t.Errorf("wss upgrade with CA: %s %q", r.Status, r.Detail)
	}

	insecureOK, _ := transport.TLSConfig(caFile, "", "", true)
	if r := CheckTLS(ctx, u, insecureOK, transport.Direct, timeout); r.Status != Fail || !strings.Contains(r.Fix, "turn TLS_INSECURE_SKIP_VERIFY off") {
		t.Errorf("needless insecure: %s %q", r.Status, r.Detail)
	}
	plain, _ := url.Parse("ws://127.0.0.1:1")
	if r := CheckTLS(ctx, plain, system, transport.Direct, timeout); r.Status != Skip {
		t.Errorf("ws://: %s", r.Status)
	}
}

func TestCheckDockerSocket(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.sock")
	if r := CheckDockerSocket(ctx, "unix://"+missing, timeout); r.Status != Fail || !strings.Contains(r.Fix, "-v /var/run/docker.sock:/var/run/docker.sock") {
		t.Errorf("missing socket: %s %q fix %q", r.Status, r.Detail, r.Fix)
	}

	regular := filepath.Join(dir, "file.sock")
	os.WriteFile(regular, nil, 0o600)
	if r := CheckDockerSocket(ctx, "unix://"+regular, timeout); r.Status != Fail || !strings.Contains(r.Detail, "not a socket") {
		t.Errorf("regular file: %s %q", r.Status, r.Detail)
	}

	path := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if r := CheckDockerSocket(ctx, "unix://"+path, timeout); r.Status != OK {
		t.Errorf("listening socket: %s %q", r.Status, r.Detail)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if r := CheckDockerSocket(ctx, "unix://"+path, timeout); r.Status != Fail || !strings.Contains(r.Detail, "no daemon listens") {
		t.Errorf("dead socket: %s %q", r.Status, r.Detail)
	}
	if r := CheckDockerSocket(ctx, "ssh://host", timeout); r.Status != Skip {
		t.Errorf("ssh host: %s", r.Status)
	}
}

// TestCheckDockerSocketPermissionDenied connects to a socket this process
// may not use: directly when not root, else from a copy of the test binary
// run as nobody (root bypasses file permissions).
func TestCheckDockerSocketPermissionDenied(t *testing.T) {
	if os.Getenv("DOCTOR_EACCES_SOCKET") != "" {
		return // the child's work is in TestEACCESChild
	}
	dir, err := os.MkdirTemp("", "doctor-eacces-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const gid = 4242
	if os.Getuid() != 0 {
		os.Chmod(path, 0)
		r := CheckDockerSocket(context.Background(), "unix://"+path, timeout)
		checkEACCES(t, r, "")
		return
	}
	if err := os.Chown(path, 0, gid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o660)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "doctor.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin, "-test.run=^TestEACCESChild$", "-test.v")
	cmd.Env = append(os.Environ(), "DOCTOR_EACCES_SOCKET="+path)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
	i := bytes.Index(out, []byte("RESULT "))
	if i < 0 {
		t.Fatalf("no result from the child:\n%s", out)
	}
	var r Result
	if err := json.NewDecoder(bytes.NewReader(out[i+len("RESULT "):])).Decode(&r); err != nil {
		t.Fatal(err)
	}
	checkEACCES(t, r, "4242")
}

func checkEACCES(t *testing.T, r Result, gid string) {
	t.Helper()
	t.Logf("%s %s\nfix: %s", r.Status, r.Detail, r.Fix)
	if r.Status != Fail || !strings.Contains(r.Detail, "permission denied") {
		t.Fatalf("got %s %q, want FAIL permission denied", r.Status, r.Detail)
	}
	for _, want := range []string{"--group-add " + gid, "--group-add $(stat -c %g ", "sudo usermod -aG ", "supplementalGroups", "group_add"} {
		if !strings.Contains(r.Fix, want) {
			t.Errorf("fix lacks %q:\n%s", want, r.Fix)
		}
	}
}

// TestEACCESChild is the child half of TestCheckDockerSocketPermissionDenied.
func TestEACCESChild(t *testing.T) {
	path := os.Getenv("DOCTOR_EACCES_SOCKET")
	if path == "" {
		t.Skip("child process only")
	}
	r := CheckDockerSocket(context.Background(), "unix://"+path, timeout)
	b, _ := json.Marshal(r)
	os.Stdout.Write([]byte("RESULT " + string(b) + "\n"))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckDockerAPI(t *testing.T) {
	dockertest.Require(t) // fails under CI=true without a daemon
	r := CheckDockerAPI(context.Background(), docker.Daemon{Host: "unix:///var/run/docker.sock"}, timeout)
	if r.Status != OK || !strings.Contains(r.Detail, "API 1.") {
		t.Errorf("real daemon: %s %q", r.Status, r.Detail)
	}
}

func TestCheckHostMetrics(t *testing.T) {
	if r := CheckHostMetrics(context.Background(), hostmetrics.Options{}); r.Status != OK || !strings.Contains(r.Detail, "cores") {
		t.Errorf("this host: %s %q", r.Status, r.Detail)
	}
	r := CheckHostMetrics(context.Background(), hostmetrics.Options{ProcPath: t.TempDir()})
	if r.Status != Fail || !strings.Contains(r.Fix, "-v /proc:/host/proc:ro -e HOST_PROC=/host/proc") {
		t.Errorf("empty HOST_PROC: %s %q fix %q", r.Status, r.Detail, r.Fix)
	}
}

func TestRunAndPrint(t *testing.T) {
	good := makeToken(t, jwt.MapClaims{"nodeId": "n1"})
	srv := newFakeServer(t, good, false)
	dir := t.TempDir()
	t.Chdir(dir) // no stray .env
	sock := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // a "daemon" that hangs up at once
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	env := []string{"SERVER_URL=" + srv.wsURL(t).String(), "NODE_TOKEN=" + good, "STATE_DIR=" + dir, "DOCKER_HOST=unix://" + sock}
	rs := Run(context.Background(), Options{Environ: env, Version: "test", Timeout: timeout})
	got := map[string]Status{}
	for _, r := range rs {
		got[r.Check] = r.Status
	}
	want := map[string]Status{
		"configuration": OK, "docker socket": OK,
		"docker api":       Fail, // the fake socket does not speak HTTP
		"server reachable": OK, "tls": Skip, "node token": OK, "websocket upgrade": OK, "host metrics": OK,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s", k, got[k], v)
		}
	}
	var buf bytes.Buffer
	if Print(&buf, rs) {
		t.Error("Print reported success with a failed check")
	}
	out := buf.String()
	t.Logf("\n%s", out)
	if strings.Contains(out, good) {
		t.Error("token in doctor output")
	}
	if !strings.Contains(out, "FAIL  docker api") || !strings.Contains(out, "fix: ") {
		t.Errorf("output format:\n%s", out)
	}

	// Invalid configuration: one FAIL naming every problem; the server checks are skipped.
	rs = Run(context.Background(), Options{Environ: []string{"STATE_DIR=" + dir, "LOG_LEVEL=loud", "DOCKER_HOST=unix://" + sock}, Timeout: timeout})
	if rs[0].Status != Fail || !strings.Contains(rs[0].Detail, "LOG_LEVEL") || !strings.Contains(rs[0].Detail, "NODE_TOKEN") {
		t.Errorf("invalid configuration: %+v", rs[0])
	}
	buf.Reset()
	if Print(&buf, []Result{{Check: "a", Status: OK}, {Check: "b", Status: Skip}}) != true {
		t.Error("ok+skip did not pass")
	}
}

// The Docker daemon and the host's /proc set only in .env are the ones
// checked, even when the rest of the configuration is invalid.
func TestRunTakesLibrarySettingsFromDotEnv(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	proc := filepath.Join(dir, "proc") // empty: no /proc/stat
	if err := os.Mkdir(proc, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "none.sock")
	if err := os.WriteFile(".env", []byte("HOST_PROC="+proc+"\nDOCKER_HOST=unix://"+sock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, r := range Run(context.Background(), Options{Environ: []string{"STATE_DIR=" + dir}, Timeout: timeout}) {
		got[r.Check] = r
	}
	if r := got["docker socket"]; r.Status != Fail || !strings.Contains(r.Detail, sock) {
		t.Errorf("docker socket: %s %q, want a failure naming %s", r.Status, r.Detail, sock)
	}
	if r := got["host metrics"]; r.Status != Fail || !strings.Contains(r.Detail, "HOST_PROC="+proc) {
		t.Errorf("host metrics: %s %q, want a failure naming HOST_PROC=%s", r.Status, r.Detail, proc)
	}
}
