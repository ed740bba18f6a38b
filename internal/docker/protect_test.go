package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// unixDaemon serves a Docker Engine API on a unix socket that answers Info
// with dataRoot (or fails while down is set) and points DOCKER_HOST at it.
func unixDaemon(t *testing.T, dataRoot string, down *atomic.Bool) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case down.Load():
			http.Error(w, `{"message":"daemon restarting"}`, http.StatusServiceUnavailable)
		case r.URL.Path == "/_ping":
			w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/info"):
			_ = json.NewEncoder(w).Encode(map[string]any{"DockerRootDir": dataRoot, "Driver": "overlay2"})
		default:
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	t.Setenv("DOCKER_TLS_VERIFY", "")
	t.Setenv("DOCKER_API_VERSION", "")
}

// TestDataRootAndStateDirProtected: H1. With VOLUME_ROOTS=/data, Docker's
// data root at /data/docker and STATE_DIR at /data/lormas-agent, the code
// before approved both as bind sources (only the fixed /var/lib/docker was
// protected): a workload bound at the data root edits another container's
// hostconfig.json (root on the host), one bound at the state directory
// reads the node's key and token. The Engine asks the daemon for its data
// root (here a fake daemon's Info) before it approves any bind.
func TestDataRootAndStateDirProtected(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	unixDaemon(t, root+"/docker", &down)
	var logs bytes.Buffer
	host := probeFor(t, "host.txt", false, nil) // judged as on a host; DataRoot: ask the daemon
	e, err := New(Options{
		VolumeRoots: []string{root}, StateDir: root + "/lormas-agent/", probe: &host,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	e.CheckRoots(ctx)

	// The daemon did not answer: no bind is approved before its data root
	// is known.
	if _, err := e.volumes.Check(root + "/docker"); protocol.CodeOf(err) != protocol.CodeUnavailable {
		t.Fatalf("bind of the data root while the daemon is down: %v, want unavailable", err)
	}
	if _, err := e.volumes.Check(root + "/lormas-agent"); protocol.CodeOf(err) != protocol.CodeForbidden ||
		!strings.Contains(err.Error(), "protected path "+root+"/lormas-agent (the agent's state directory (STATE_DIR))") {
		t.Errorf("bind of STATE_DIR: %v, want forbidden naming it", err)
	}

	down.Store(false)
	if err := e.checkRoots(ctx); err != nil {
		t.Fatalf("checkRoots: %v", err)
	}
	for _, tt := range []struct{ host, want string }{
		{root + "/docker", "touches the protected path " + root + "/docker (Docker's data root)"},
		{root + "/lormas-agent", "touches the protected path " + root + "/lormas-agent (the agent's state directory (STATE_DIR))"},
	} {
		if _, err := e.volumes.Check(tt.host); protocol.CodeOf(err) != protocol.CodeForbidden || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%q) = %v, want forbidden: %q", tt.host, err, tt.want)
		}
	}
	if _, err := e.volumes.Check(root + "/web"); err != nil {
		t.Errorf("Check of a plain bind source: %v", err)
	}
	for _, want := range []string{
		`msg="volume root contains a protected path: bind mounts of it are refused" component=docker root=` + root + ` protected="` + root + `/docker (Docker's data root)" refused=` + root + `/docker`,
		`protected="` + root + `/lormas-agent (the agent's state directory (STATE_DIR))"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestRootInsideProtectedPath: a root inside STATE_DIR stops the start; a
// root inside the daemon's data root (known only once it answers) is
// refused whole, with a warning.
func TestRootInsideProtectedPath(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	host := probeFor(t, "host.txt", false, nil)
	host.DataRoot = func(context.Context) (string, error) { return dir + "/docker", nil }
	t.Setenv("DOCKER_HOST", "unix://"+dir+"/none.sock")
	_, err = New(Options{VolumeRoots: []string{dir + "/state/volumes"}, StateDir: dir + "/state", probe: &host})
	if err == nil || !strings.Contains(err.Error(), "volume root "+dir+"/state/volumes lies inside the protected path "+dir+"/state (the agent's state directory (STATE_DIR))") {
		t.Errorf("New with a root inside STATE_DIR: %v", err)
	}

	var logs bytes.Buffer
	e, err := New(Options{VolumeRoots: []string{dir + "/docker/volumes"}, StateDir: dir + "/state", probe: &host,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.CheckRoots(context.Background())
	if _, err := e.volumes.Check(dir + "/docker/volumes/web"); protocol.CodeOf(err) != protocol.CodeForbidden || !strings.Contains(err.Error(), "protected path "+dir+"/docker (Docker's data root)") {
		t.Errorf("bind under a root inside the data root: %v, want forbidden", err)
	}
	if !strings.Contains(logs.String(), "lies inside the protected path "+dir+"/docker (Docker's data root)") {
		t.Errorf("no warning about the root inside the data root:\n%s", logs.String())
	}
	_ = os.Remove(dir + "/none.sock")
}

// TestNewAsksTheDaemonNothing: a daemon that accepts connections and never
// answers (a real libnetwork deadlock hangs Info) held up New, and with it
// the agent's connection to the server. New makes no request; the volume
// roots are checked by CheckRoots, which the agent runs in the background.
func TestNewAsksTheDaemonNothing(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		<-r.Context().Done()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	t.Setenv("DOCKER_TLS_VERIFY", "")
	t.Setenv("DOCKER_API_VERSION", "")
	e, err := New(Options{Daemon: Daemon{Host: "unix://" + sock}, VolumeRoots: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if n := requests.Load(); n != 0 {
		t.Errorf("New sent %d requests to the daemon, want none", n)
	}
}
