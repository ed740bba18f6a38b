package config

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpproxy"

	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/secret"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// testToken looks like a JWT; tests assert it never appears in error text.
const testToken = "eyJhbGciOiJIUzI1NiJ9.eyJub2RlSWQiOiJuMSJ9.c2VjcmV0LXNpZ25hdHVyZQ"

// loadIn runs load with a .env path inside a fresh temporary directory
// (content "" means no .env file at all).
func loadIn(t *testing.T, dotenv string, environ ...string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	if dotenv != "" {
		if err := os.WriteFile(path, []byte(dotenv), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// STATE_DIR defaults to /var/lib/lormas-agent; keep tests off the host.
	environ = append([]string{"STATE_DIR=" + filepath.Join(dir, "state")}, environ...)
	return load(environ, path)
}

func mustLoad(t *testing.T, dotenv string, environ ...string) *Config {
	t.Helper()
	cfg, err := loadIn(t, dotenv, environ...)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	cfg := mustLoad(t, "", "NODE_TOKEN="+testToken)
	host, _ := os.Hostname()
	checks := []struct {
		name      string
		got, want any
	}{
		{"SERVER_URL", cfg.ServerURL, "ws://localhost:3000"},
		{"NODE_NAME", cfg.NodeName, host},
		{"NODE_ID", cfg.NodeID, ""},
		{"NODE_TOKEN_IN_QUERY", cfg.NodeTokenInQuery, true},
		{"LOG_LEVEL", cfg.LogLevel, "info"},
		{"LOG_FORMAT", cfg.LogFormat, "text"},
		{"HEARTBEAT_INTERVAL", cfg.HeartbeatInterval, 10 * time.Second},
		{"RECONNECT_DELAY", cfg.ReconnectDelay, time.Second},
		{"RECONNECT_MAX_DELAY", cfg.ReconnectMaxDelay, 60 * time.Second},
		{"MAX_RECONNECT_ATTEMPTS", cfg.MaxReconnectAttempts, 0},
		{"MAX_CONCURRENT_COMMANDS", cfg.MaxConcurrentCommands, 32},
		{"MAX_MESSAGE_BYTES", cfg.MaxMessageBytes, ByteSize(1 << 20)},
		{"SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout, 10 * time.Second},
		{"OUTBOX_LIMIT", cfg.OutboxLimit, 1000},
		{"MAX_PENDING_BYTES", cfg.MaxPendingBytes, ByteSize(64 << 20)},
		{"RESULT_STORE_BYTES", cfg.ResultStoreBytes, ByteSize(16 << 20)},
		{"VOLUME_ROOTS", cfg.VolumeRoots, []string{"/var/lib/lormas/volumes"}},
		{"ALLOW_UNMANAGED", cfg.AllowUnmanaged, false},
		{"STATUS_EVENTS", cfg.StatusEvents, true},
		{"DISK_LIMIT_MODE", cfg.DiskLimitMode, "warn"},
		{"ALLOW_EXEC", cfg.AllowExec, true},
		{"ALLOW_CONSOLE_INPUT", cfg.AllowConsoleInput, true},
		{"MAX_SESSIONS", cfg.MaxSessions, 64},
		{"CONTAINER_PIDS_LIMIT", cfg.ContainerPidsLimit, int64(512)},
		{"CONTAINER_LOG_MAX_SIZE", cfg.ContainerLogMaxSize, "10m"},
		{"CONTAINER_LOG_MAX_FILE", cfg.ContainerLogMaxFile, 3},
		{"LOG_STREAM_BUFFER", cfg.LogStreamBuffer, ByteSize(8 << 20)},
		{"DOCKER_TIMEOUT", cfg.DockerTimeout, 30 * time.Second},
		{"TLS_CA_FILE", cfg.TLSCAFile, ""},
		{"TLS_INSECURE_SKIP_VERIFY", cfg.TLSInsecureSkipVerify, false},
		{"HEALTH_ADDR", cfg.HealthAddr, "127.0.0.1:9321"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if cfg.NodeToken.Reveal() != testToken {
		t.Errorf("NODE_TOKEN not kept")
	}
	// StateDir default is the documented one when not overridden.
	if got := Default("STATE_DIR"); got != "/var/lib/lormas-agent" {
		t.Errorf("STATE_DIR default = %q", got)
	}
}

func TestEveryVariableParsed(t *testing.T) {
	dir := t.TempDir()
	ca := testsupport.WriteFile(t, dir, "ca.pem", "ca")
	cert := testsupport.WriteFile(t, dir, "cert.pem", "cert")
	key := testsupport.WriteFile(t, dir, "key.pem", "key")
	environ := []string{
		"SERVER_URL=https://lormas.example.com/base/",
		"NODE_TOKEN=" + testToken,
		"NODE_TOKEN_IN_QUERY=false",
		"NODE_NAME=node-7",
		"NODE_ID=id-7",
		"LOG_LEVEL=DEBUG",
		"LOG_FORMAT=json",
		"HEARTBEAT_INTERVAL=3s",
		"RECONNECT_DELAY=250ms",
		"RECONNECT_MAX_DELAY=2m",
		"MAX_RECONNECT_ATTEMPTS=10",
		"MAX_CONCURRENT_COMMANDS=4",
		"MAX_MESSAGE_BYTES=4MiB",
		"SHUTDOWN_TIMEOUT=30s",
		"OUTBOX_LIMIT=50",
		"MAX_PENDING_BYTES=256MiB",
		"RESULT_STORE_BYTES=4m",
		"VOLUME_ROOTS=/srv/a, /srv/b ,",
		"ALLOW_UNMANAGED=true",
		"STATUS_EVENTS=false",
		"DISK_LIMIT_MODE=strict",
		"ALLOW_EXEC=false",
		"ALLOW_CONSOLE_INPUT=false",
		"MAX_SESSIONS=8",
		"CONTAINER_PIDS_LIMIT=100",
		"CONTAINER_LOG_MAX_SIZE=20MiB",
		"CONTAINER_LOG_MAX_FILE=5",
		"LOG_STREAM_BUFFER=16MiB",
		"DOCKER_TIMEOUT=5s",
		"TLS_CA_FILE=" + ca,
		"TLS_CERT_FILE=" + cert,
		"TLS_KEY_FILE=" + key,
		"TLS_INSECURE_SKIP_VERIFY=true",
		"HEALTH_ADDR=127.0.0.1:9100",
		"DOCKER_HOST=unix:///run/docker.sock",
		"DOCKER_TLS_VERIFY=1",
		"DOCKER_CERT_PATH=/certs",
		"HTTPS_PROXY=http://proxy:3128",
		"NO_PROXY=localhost",
		"HOST_PROC=/host/proc",
		"HOST_SYS=/host/sys",
		"HOST_ROOT=/host",
		"STATE_DIR=" + filepath.Join(dir, "state"),
	}
	cfg, err := load(environ, filepath.Join(dir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ServerURL: "https://lormas.example.com/base/", NodeToken: secret.New(testToken),
		StateDir: filepath.Join(dir, "state"), NodeName: "node-7", NodeID: "id-7",
		Settings:          logging.Settings{LogLevel: "debug", LogFormat: "json"},
		HeartbeatInterval: 3 * time.Second, ReconnectDelay: 250 * time.Millisecond,
		ReconnectMaxDelay: 2 * time.Minute, MaxReconnectAttempts: 10, MaxConcurrentCommands: 4,
		MaxMessageBytes: 4 << 20, ShutdownTimeout: 30 * time.Second, OutboxLimit: 50, MaxPendingBytes: 256 << 20, ResultStoreBytes: 4 << 20,
		VolumeRoots: []string{"/srv/a", "/srv/b"}, AllowUnmanaged: true, StatusEvents: false,
		DiskLimitMode: "strict", AllowExec: false, AllowConsoleInput: false, MaxSessions: 8, ContainerPidsLimit: 100, ContainerLogMaxSize: "20MiB",
		ContainerLogMaxFile: 5, LogStreamBuffer: 16 << 20, DockerTimeout: 5 * time.Second,
		TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key, TLSInsecureSkipVerify: true,
		HealthAddr: "127.0.0.1:9100",
		DockerHost: "unix:///run/docker.sock", DockerTLSVerify: "1", DockerCertPath: "/certs",
		HTTPSProxy: "http://proxy:3128", NoProxy: "localhost",
		HostProc: "/host/proc", HostSys: "/host/sys", HostRoot: "/host",
		proxy: httpproxy.Config{HTTPSProxy: "http://proxy:3128", NoProxy: "localhost"},
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got  %+v\nwant %+v", *cfg, want)
	}
	// Every documented variable was exercised by this test.
	set := map[string]bool{}
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	for _, v := range Variables() {
		if !set[v.Name] && !strings.Contains(v.Name, "_FILE") && !strings.HasPrefix(v.Name, "ENROLLMENT") {
			t.Errorf("variable %s not covered", v.Name)
		}
	}
}

func TestHealthAddrEmptyDisables(t *testing.T) {
	cfg := mustLoad(t, "", "NODE_TOKEN="+testToken, "HEALTH_ADDR=")
	if cfg.HealthAddr != "" {
		t.Errorf("HEALTH_ADDR = %q, want empty (disabled)", cfg.HealthAddr)
	}
}

func TestDotEnvPrecedence(t *testing.T) {
	dotenv := strings.Join([]string{
		"# agent settings",
		"export NODE_TOKEN='" + testToken + "'",
		"LOG_LEVEL=debug",
		`NODE_NAME="from dotenv"   # comment`,
		"HOST_PROC=/host/proc",
		"DOCKER_HOST=unix:///from/dotenv.sock",
		"",
	}, "\n")
	cfg := mustLoad(t, dotenv, "LOG_LEVEL=warn", "DOCKER_HOST=unix:///real.sock")
	if cfg.LogLevel != "warn" {
		t.Errorf("LOG_LEVEL = %q, want the real environment's warn", cfg.LogLevel)
	}
	if cfg.NodeName != "from dotenv" {
		t.Errorf("NODE_NAME = %q, want the .env value", cfg.NodeName)
	}
	if cfg.NodeToken.Reveal() != testToken {
		t.Errorf("NODE_TOKEN from .env not read")
	}
	if cfg.DockerHost != "unix:///real.sock" {
		t.Errorf("DOCKER_HOST = %q, want the real environment's", cfg.DockerHost)
	}
}

// The settings of libraries come from .env like any other and reach
// Config, whose fields cmd/lormas-agent hands to the libraries; nothing is
// written into the process environment.
func TestDotEnvSetsLibrarySettings(t *testing.T) {
	dotenv := "HOST_PROC=/from/dotenv\nHOST_SYS=/from/dotenv/sys\nHOST_ROOT=/from/dotenv/root\n" +
		"DOCKER_HOST=unix:///dotenv.sock\nDOCKER_CERT_PATH=/certs\nDOCKER_TLS_VERIFY=1\n" +
		"https_proxy=http://dotenv-proxy:3128\nNO_PROXY=.internal\nNODE_TOKEN=" + testToken + "\n"
	for _, k := range []string{"HOST_PROC", "HOST_SYS", "DOCKER_HOST", "https_proxy", "HTTPS_PROXY", "NO_PROXY", "no_proxy", "NODE_TOKEN"} {
		t.Setenv(k, "") // restored afterwards
		os.Unsetenv(k)
	}
	cfg := mustLoad(t, dotenv, "HOST_SYS=/real/sys")
	for _, c := range []struct{ name, got, want string }{
		{"HOST_PROC", cfg.HostProc, "/from/dotenv"},
		{"HOST_SYS", cfg.HostSys, "/real/sys"},
		{"HOST_ROOT", cfg.HostRoot, "/from/dotenv/root"},
		{"DOCKER_HOST", cfg.DockerHost, "unix:///dotenv.sock"},
		{"DOCKER_CERT_PATH", cfg.DockerCertPath, "/certs"},
		{"DOCKER_TLS_VERIFY", cfg.DockerTLSVerify, "1"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	proxy := cfg.Proxy()
	for target, want := range map[string]string{
		"https://lormas.example/api/ws/nodes":  "http://dotenv-proxy:3128",
		"https://lormas.internal/api/ws/nodes": "", // NO_PROXY
		"http://lormas.example/api/ws/nodes":   "", // no HTTP_PROXY
		"https://127.0.0.1:3000/api/ws/nodes":  "", // loopback
	} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		u, err := proxy(req)
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != want {
			t.Errorf("proxy for %s = %q, %v; want %q", target, got, err, want)
		}
	}
	for _, k := range []string{"HOST_PROC", "DOCKER_HOST", "https_proxy", "NODE_TOKEN"} {
		if v, set := os.LookupEnv(k); set {
			t.Errorf("%s=%q was written into the process environment", k, v)
		}
	}
}

// The real environment wins over .env variable by variable; of the
// variables then set, upper case goes before lower case, as net/http reads
// them (as when .env's were exported into the process environment).
func TestProxyPrecedence(t *testing.T) {
	cfg := mustLoad(t, "HTTPS_PROXY=http://dotenv:1\nHTTP_PROXY=http://dotenv-plain:1\n",
		"NODE_TOKEN="+testToken, "HTTPS_PROXY=http://real:2", "http_proxy=http://real-lower:2")
	want := httpproxy.Config{HTTPSProxy: "http://real:2", HTTPProxy: "http://dotenv-plain:1"}
	if cfg.proxy != want {
		t.Errorf("proxy settings %+v, want %+v", cfg.proxy, want)
	}
}

func TestDotEnvMissingIsFine(t *testing.T) {
	cfg, err := load([]string{"NODE_TOKEN=" + testToken, "STATE_DIR=" + t.TempDir()}, filepath.Join(t.TempDir(), "none", ".env"))
	if err != nil || cfg == nil {
		t.Fatalf("load without .env: %v", err)
	}
}

func TestLoadReadsDotEnvInWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	testsupport.WriteFile(t, dir, ".env", "NODE_TOKEN="+testToken+"\nNODE_NAME=wd\n")
	t.Chdir(dir)
	cfg, err := Load([]string{"STATE_DIR=" + filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "wd" {
		t.Errorf("NODE_NAME = %q, want wd from ./.env", cfg.NodeName)
	}
}

func TestInvalidValues(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		env  string
		want string // the problem line starts with the variable and contains this
	}{
		{"SERVER_URL=ftp://x", "SERVER_URL: "},
		{"SERVER_URL=ws://", "SERVER_URL: "},
		{"LOG_LEVEL=verbose", `LOG_LEVEL: "verbose" is not one of`},
		{"LOG_FORMAT=xml", `LOG_FORMAT: "xml"`},
		{"DISK_LIMIT_MODE=maybe", "DISK_LIMIT_MODE: "},
		{"MAX_SESSIONS=0", "MAX_SESSIONS: "},
		{"ALLOW_EXEC=maybe", "ALLOW_EXEC: "},
		{"HEARTBEAT_INTERVAL=abc", "HEARTBEAT_INTERVAL: "},
		{"HEARTBEAT_INTERVAL=-1s", "HEARTBEAT_INTERVAL: must be a positive duration"},
		{"HEARTBEAT_INTERVAL=10", `HEARTBEAT_INTERVAL: "10" has no unit: add a unit: 10s`},
		{"SHUTDOWN_TIMEOUT=30", `SHUTDOWN_TIMEOUT: "30" has no unit: add a unit: 30s`},
		{"SERVER_URL=ws://lormas.example:3000/api/ws/nodes", "SERVER_URL: ws://lormas.example:3000/api/ws/nodes ends in /api/ws/nodes, which the agent appends itself: set SERVER_URL=ws://lormas.example:3000"},
		{"SERVER_URL=https://lormas.example/base/api/ws/", "SERVER_URL: https://lormas.example/base/api/ws/ ends in /api/ws, which the agent appends itself: set SERVER_URL=wss://lormas.example/base"},
		{"RECONNECT_DELAY=0s", "RECONNECT_DELAY: must be a positive"},
		{"RECONNECT_MAX_DELAY=100ms", "RECONNECT_MAX_DELAY: 100ms is less than RECONNECT_DELAY"},
		{"SHUTDOWN_TIMEOUT=0", "SHUTDOWN_TIMEOUT: "},
		{"DOCKER_TIMEOUT=0s", "DOCKER_TIMEOUT: "},
		{"MAX_RECONNECT_ATTEMPTS=-1", "MAX_RECONNECT_ATTEMPTS: -1 is out of range"},
		{"MAX_RECONNECT_ATTEMPTS=ten", "MAX_RECONNECT_ATTEMPTS: "},
		{"MAX_CONCURRENT_COMMANDS=0", "MAX_CONCURRENT_COMMANDS: 0 is out of range 1..4096"},
		{"MAX_MESSAGE_BYTES=12", "MAX_MESSAGE_BYTES: 12 is out of range"},
		{"MAX_MESSAGE_BYTES=1e99g", "MAX_MESSAGE_BYTES: invalid size"},
		{"MAX_MESSAGE_BYTES=-1", "MAX_MESSAGE_BYTES: invalid size"},
		{"OUTBOX_LIMIT=0", "OUTBOX_LIMIT: 0 is out of range"},
		{"MAX_PENDING_BYTES=lots", "MAX_PENDING_BYTES: invalid size"},
		{"RESULT_STORE_BYTES=0", "RESULT_STORE_BYTES: 0 is out of range"},
		{"RESULT_STORE_BYTES=8g", "RESULT_STORE_BYTES: 8589934592 is out of range"},
		{"MAX_PENDING_BYTES=-1", "MAX_PENDING_BYTES: invalid size"},
		{"MAX_PENDING_BYTES=512k", "MAX_PENDING_BYTES: 524288 is out of range"},
		{"MAX_PENDING_BYTES=1e99g", "MAX_PENDING_BYTES: invalid size"},
		{"MAX_PENDING_BYTES=4m", "MAX_PENDING_BYTES: 4194304 is less than 8 times MAX_MESSAGE_BYTES (1048576)"},
		{"VOLUME_ROOTS=relative/dir", `VOLUME_ROOTS: "relative/dir" is not an absolute path`},
		{"VOLUME_ROOTS=/", `VOLUME_ROOTS: "/" would allow`},
		{"VOLUME_ROOTS= , ", "VOLUME_ROOTS: must list at least one"},
		{"VOLUME_ROOTS=/srv/v,/srv/v/inner", `VOLUME_ROOTS: "/srv/v" and "/srv/v/inner" nest`},
		{"VOLUME_ROOTS=/srv/v/,/srv/v", `VOLUME_ROOTS: "/srv/v/" and "/srv/v" nest`},
		{"ALLOW_UNMANAGED=perhaps", "ALLOW_UNMANAGED: "},
		{"STATUS_EVENTS=2", "STATUS_EVENTS: "},
		{"CONTAINER_PIDS_LIMIT=0", "CONTAINER_PIDS_LIMIT: 0 is out of range"},
		{"CONTAINER_LOG_MAX_SIZE=big", "CONTAINER_LOG_MAX_SIZE: invalid size"},
		{"CONTAINER_LOG_MAX_SIZE=10", "CONTAINER_LOG_MAX_SIZE: must be at least 1k"},
		{"CONTAINER_LOG_MAX_FILE=0", "CONTAINER_LOG_MAX_FILE: 0 is out of range"},
		{"LOG_STREAM_BUFFER=64k", "LOG_STREAM_BUFFER: 65536 is out of range"},
		{"LOG_STREAM_BUFFER=2g", "LOG_STREAM_BUFFER: 2147483648 is out of range"},
		{"LOG_STREAM_BUFFER=lots", "LOG_STREAM_BUFFER: invalid size"},
		{"TLS_CERT_FILE=" + testsupport.WriteFile(t, dir, "c.pem", "x"), "TLS_KEY_FILE: must be set together with TLS_CERT_FILE"},
		{"TLS_KEY_FILE=" + testsupport.WriteFile(t, dir, "k.pem", "x"), "TLS_CERT_FILE: must be set together with TLS_KEY_FILE"},
		{"TLS_CA_FILE=" + missing, "TLS_CA_FILE: open " + missing},
		{"TLS_INSECURE_SKIP_VERIFY=yes", "TLS_INSECURE_SKIP_VERIFY: "},
		{"HEALTH_ADDR=8080", "HEALTH_ADDR: want host:port"},
		{"HEALTH_ADDR=:http", `HEALTH_ADDR: port "http"`},
		{"NODE_NAME=bad\x01name", "NODE_NAME: "},
		{"NODE_TOKEN_FILE=" + missing, "NODE_TOKEN: set only one of"},
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			_, err := loadIn(t, "", "NODE_TOKEN="+testToken, c.env)
			problems := Problems(err)
			if len(problems) != 1 {
				t.Fatalf("got %d problems %q, want exactly 1 containing %q", len(problems), problems, c.want)
			}
			if !strings.HasPrefix(problems[0], c.want[:strings.Index(c.want, ":")+1]) || !strings.Contains(problems[0], c.want) {
				t.Errorf("problem %q, want it to contain %q", problems[0], c.want)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("token in error: %v", err)
			}
		})
	}
}

func TestMultipleProblemsAtOnce(t *testing.T) {
	_, err := loadIn(t, "GOOD=1\nthis line is broken\n",
		"SERVER_URL=gopher://x", "LOG_LEVEL=loud", "HEARTBEAT_INTERVAL=soon",
		"MAX_CONCURRENT_COMMANDS=-3", "VOLUME_ROOTS=rel", "TLS_CERT_FILE=/x")
	got := Problems(err)
	wantPrefixes := []string{
		".env line 2: ", "SERVER_URL: ", "LOG_LEVEL: ", "HEARTBEAT_INTERVAL: ",
		"MAX_CONCURRENT_COMMANDS: ", "VOLUME_ROOTS: ", "TLS_KEY_FILE: ", "TLS_CERT_FILE: ", "NODE_TOKEN: required",
	}
	if len(got) != len(wantPrefixes) {
		t.Fatalf("got %d problems:\n%s\nwant %d", len(got), strings.Join(got, "\n"), len(wantPrefixes))
	}
	for _, p := range wantPrefixes {
		found := false
		for _, g := range got {
			// The .env line is prefixed by the file's path.
			found = found || strings.HasPrefix(g, p) || strings.HasPrefix(p, ".env") && strings.Contains(g, "/"+p)
		}
		if !found {
			t.Errorf("no problem starting %q in:\n%s", p, strings.Join(got, "\n"))
		}
	}
	t.Logf("%v", err)
	// One line per problem in the error text.
	if n := strings.Count(err.Error(), "\n"); n != len(got) {
		t.Errorf("error has %d lines after the title, want %d:\n%v", n, len(got), err)
	}
}

func TestTokenSourceRules(t *testing.T) {
	dir := t.TempDir()
	file := testsupport.WriteFile(t, dir, "tok", testToken+"\n")
	cases := []struct {
		name    string
		environ []string
		want    string // "" = valid
	}{
		{"none", nil, "NODE_TOKEN: required"},
		{"token", []string{"NODE_TOKEN=" + testToken}, ""},
		{"token with newline", []string{"NODE_TOKEN=" + testToken + "\n"}, ""},
		{"token with inner space", []string{"NODE_TOKEN=abc " + testToken}, "NODE_TOKEN: contains whitespace"},
		{"file", []string{"NODE_TOKEN_FILE=" + file}, ""},
		{"missing file", []string{"NODE_TOKEN_FILE=" + dir + "/nope"}, "NODE_TOKEN_FILE: open " + dir + "/nope: no such file"},
		{"empty file", []string{"NODE_TOKEN_FILE=" + testsupport.WriteFile(t, dir, "empty", " \n")}, "NODE_TOKEN_FILE: " + dir + "/empty: file is empty"},
		{"enrollment", []string{"ENROLLMENT_TOKEN=" + testToken}, ""},
		{"enrollment file", []string{"ENROLLMENT_TOKEN_FILE=" + file}, ""},
		// Not there yet: awaited at enrollment (the server writes it).
		{"enrollment file not yet written", []string{"ENROLLMENT_TOKEN_FILE=" + dir + "/nope"}, ""},
		{"enrollment file is a directory", []string{"ENROLLMENT_TOKEN_FILE=" + dir}, "ENROLLMENT_TOKEN_FILE: read " + dir},
		{"token and enrollment", []string{"NODE_TOKEN=" + testToken, "ENROLLMENT_TOKEN=" + testToken},
			"NODE_TOKEN: set only one of NODE_TOKEN, NODE_TOKEN_FILE, ENROLLMENT_TOKEN, ENROLLMENT_TOKEN_FILE (set: NODE_TOKEN, ENROLLMENT_TOKEN)"},
		{"enrollment both", []string{"ENROLLMENT_TOKEN=" + testToken, "ENROLLMENT_TOKEN_FILE=" + file}, "ENROLLMENT_TOKEN: set only one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadIn(t, "", c.environ...)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			p := Problems(err)
			if len(p) != 1 || !strings.HasPrefix(p[0], c.want) {
				t.Errorf("problems %q, want one starting %q", p, c.want)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("token in error: %v", err)
			}
		})
	}
}

func TestMalformedDotEnvNeverEchoesSecret(t *testing.T) {
	_, err := loadIn(t, "NODE_TOKEN=\""+testToken+"\n", "NODE_TOKEN_FILE=/nope")
	if err == nil {
		t.Fatal("want error")
	}
	if strings.Contains(err.Error(), testToken) || strings.Contains(err.Error(), testToken[:10]) {
		t.Errorf("secret echoed: %v", err)
	}
	if !strings.Contains(err.Error(), ".env line 1 (NODE_TOKEN): unterminated double quote") {
		t.Errorf("error does not name the line: %v", err)
	}
}

func TestLookupEnv(t *testing.T) {
	dir := t.TempDir()
	path := testsupport.WriteFile(t, dir, ".env", "HEALTH_ADDR=:9000\nbroken line\nLOG_LEVEL=debug\n")
	cases := []struct {
		environ []string
		key     string
		want    string
		ok      bool
	}{
		{nil, "HEALTH_ADDR", ":9000", true},
		{[]string{"HEALTH_ADDR=:9100"}, "HEALTH_ADDR", ":9100", true},
		{[]string{"HEALTH_ADDR="}, "HEALTH_ADDR", "", true},
		{nil, "NODE_NAME", "", false},
	}
	for _, c := range cases {
		got, ok, err := lookupEnv(c.environ, path, c.key)
		if err != nil {
			t.Errorf("lookupEnv(%q, %s): %v", c.environ, c.key, err)
		}
		if got != c.want || ok != c.ok {
			t.Errorf("lookupEnv(%q, %s) = %q, %v; want %q, %v", c.environ, c.key, got, ok, c.want, c.ok)
		}
	}
}

// After enrollment no token variable is needed: the token stored in
// STATE_DIR is enough, and the agent dials with it.
func TestStoredTokenIsEnough(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	if err := (enroll.State{Dir: state}).StoreToken(testToken); err != nil {
		t.Fatal(err)
	}
	cfg, err := load([]string{"STATE_DIR=" + state}, filepath.Join(t.TempDir(), ".env"))
	if err != nil {
		t.Fatalf("restart with stored token: %v", err)
	}
	if got, err := cfg.Credentials().Token(); err != nil || got != testToken {
		t.Errorf("token = %q, %v; want the stored one", got, err)
	}
}

// The agent and the server accept the same LOG_LEVEL values
// (logging.Settings; the server's test is in internal/server).
func TestLogLevels(t *testing.T) {
	for _, level := range []string{"debug", "info", "warn", "warning", "error", "WARNING", " Info "} {
		cfg, err := loadIn(t, "", "NODE_TOKEN="+testToken, "LOG_LEVEL="+level, "LOG_FORMAT=JSON")
		if err != nil {
			t.Errorf("LOG_LEVEL=%q: %v", level, err)
			continue
		}
		if _, err := logging.New(io.Discard, cfg.LogLevel, cfg.LogFormat); err != nil {
			t.Errorf("LOG_LEVEL=%q accepted but the logger refuses it: %v", level, err)
		}
	}
	for _, level := range []string{"trace", "warnings", "fatal"} {
		_, err := loadIn(t, "", "NODE_TOKEN="+testToken, "LOG_LEVEL="+level)
		if p := Problems(err); len(p) != 1 || !strings.HasPrefix(p[0], "LOG_LEVEL: ") {
			t.Errorf("LOG_LEVEL=%q: problems %q, want one about LOG_LEVEL", level, p)
		}
	}
}
