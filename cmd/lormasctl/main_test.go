package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func runCLI(t *testing.T, envMap map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, env{func(k string) string { return envMap[k] }}, strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestHelpReadsLikeDocker(t *testing.T) {
	out, _, code := runCLI(t, nil, "--help")
	for _, want := range []string{"Usage:  lormasctl [OPTIONS] COMMAND", "Management Commands:", "Commands:", "  exec ", "  attach ", "  stats ", "LORMAS_TOKEN_FILE"} {
		if !strings.Contains(out, want) || code != 0 {
			t.Errorf("help lacks %q (status %d):\n%s", want, code, out)
		}
	}
	out, _, code = runCLI(t, nil, "exec", "--help")
	if code != 0 || !strings.Contains(out, "-i, --interactive") || !strings.Contains(out, "-t, --tty") {
		t.Errorf("exec --help (status %d):\n%s", code, out)
	}
	_, errOut, code := runCLI(t, nil, "frobnicate")
	if code != exitUsage || !strings.Contains(errOut, "'frobnicate' is not a lormasctl command") {
		t.Errorf("unknown command: status %d %q", code, errOut)
	}
	_, errOut, code = runCLI(t, nil, "ps")
	if code != exitError || !strings.Contains(errOut, "LORMAS_TOKEN") {
		t.Errorf("no token: status %d %q", code, errOut)
	}
}

func TestFlagsCombineLikeDocker(t *testing.T) {
	c := &cli{stdout: io.Discard}
	var i, tt bool
	var user string
	var env []string
	f := c.newFlags("exec")
	f.Bool(&i, "i", "interactive", "")
	f.Bool(&tt, "t", "tty", "")
	f.String(&user, "u", "user", "", "")
	f.List(&env, "e", "env", "")
	rest, err := f.Parse([]string{"-it", "-u", "1000", "--env", "A=1", "-eB=2", "web", "sh", "-c", "ls -l"})
	if err != nil {
		t.Fatal(err)
	}
	if !i || !tt || user != "1000" || strings.Join(env, ",") != "A=1,B=2" || strings.Join(rest, "|") != "web|sh|-c|ls -l" {
		t.Errorf("i %t t %t user %q env %q rest %q", i, tt, user, env, rest)
	}
	if _, err := f.Parse([]string{"-x", "web"}); err == nil {
		t.Error("unknown shorthand accepted")
	}
}

// TestCreateSendsTheEgg checks the create command built from docker-style
// flags, through a stand-in server.
func TestCreateSendsTheEgg(t *testing.T) {
	var got protocol.Command
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/nodes":
			_, _ = io.WriteString(w, `[{"id":"n1","name":"alpha"}]`)
		case "/api/nodes/n1/commands":
			_ = json.NewDecoder(r.Body).Decode(&got)
			_, _ = io.WriteString(w, `{"type":"command_result","status":"success","result":{"containerId":"abc"}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	env := map[string]string{"LORMAS_URL": srv.URL, "LORMAS_TOKEN": "tok"}
	out, errOut, code := runCLI(t, env, "--node", "alpha", "create", "-i", "-t", "-p", "127.0.0.1:8080:80/udp", "-v", "/srv/d:/data:ro",
		"-e", "A=1", "--cpus", "0.5", "-m", "256m", "--restart", "always", "web", "img:1", "serve", "--port", "80")
	if code != 0 || strings.TrimSpace(out) != "abc" {
		t.Fatalf("create: status %d out %q err %q", code, out, errOut)
	}
	e := got.EggConfig
	if got.Action != protocol.ActionCreate || got.ContainerID != "web" || e == nil || e.Image != "img:1" || !e.OpenStdin || !e.UseTTY() ||
		strings.Join(e.Command, " ") != "serve --port 80" || len(e.Ports) != 1 || e.Ports[0] != (protocol.Port{Host: 8080, Container: 80, Protocol: "udp", HostIP: "127.0.0.1"}) ||
		len(e.Volumes) != 1 || !e.Volumes[0].ReadOnly || got.Environment["A"] != "1" || got.Resources.CPU != 0.5 || got.Resources.Memory != "256m" ||
		e.RestartPolicy != "always" {
		t.Errorf("create command %+v egg %+v", got, e)
	}
	_, errOut, code = runCLI(t, env, "--node", "beta", "ps")
	if code != exitError || !strings.Contains(errOut, "no such node: beta") {
		t.Errorf("unknown node: %d %q", code, errOut)
	}
}

func TestDetachKeys(t *testing.T) {
	for _, tc := range []struct {
		prev byte
		data string
		want int
	}{
		{0, "abc", -1},
		{0, "ab\x10\x11c", 2},
		{0x10, "\x11", 0},
		{0, "\x10", -1},
	} {
		if got := detachIndex(tc.prev, []byte(tc.data)); got != tc.want {
			t.Errorf("detachIndex(%q, %q) = %d, want %d", tc.prev, tc.data, got, tc.want)
		}
	}
}
