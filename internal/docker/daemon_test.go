package docker

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/client"
)

// The daemon's address and certificates come from Daemon, which the agent
// fills from its configuration (.env included); the process environment
// only fills what Daemon leaves empty.
func TestDaemonClientOpts(t *testing.T) {
	t.Setenv("DOCKER_HOST", "tcp://from-env:2375")
	t.Setenv("DOCKER_CERT_PATH", "")
	for _, c := range []struct {
		name string
		d    Daemon
		want string
	}{
		{"configured", Daemon{Host: "unix:///run/configured.sock"}, "unix:///run/configured.sock"},
		{"empty: the environment's", Daemon{}, "tcp://from-env:2375"},
	} {
		cli, err := client.NewClientWithOpts(c.d.ClientOpts()...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := cli.DaemonHost(); got != c.want {
			t.Errorf("%s: daemon host %q, want %q", c.name, got, c.want)
		}
		cli.Close()
	}
	if got := (Daemon{}).HostOrDefault(); got != "tcp://from-env:2375" {
		t.Errorf("HostOrDefault of nothing = %q, want the environment's", got)
	}
	t.Setenv("DOCKER_HOST", "")
	if got := (Daemon{}).HostOrDefault(); got != client.DefaultDockerHost {
		t.Errorf("HostOrDefault of nothing = %q, want the client's default", got)
	}

	// DOCKER_CERT_PATH is used: a directory without the certificates is an
	// error naming the file.
	dir := filepath.Join(t.TempDir(), "certs")
	_, err := client.NewClientWithOpts(Daemon{Host: "tcp://daemon:2376", CertPath: dir, TLSVerify: "1"}.ClientOpts()...)
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("missing certificates: %v, want an error naming %s", err, dir)
	}
}
