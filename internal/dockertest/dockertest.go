// Package dockertest holds helpers for tests that need the real Docker Engine:
// Require connects (failing under CI=true, skipping loudly elsewhere when no
// daemon answers), and WorkloadImage builds the FROM-scratch image of the test
// workload program in ./workload (see its doc comment for its flags).
package dockertest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

// pingTimeout bounds the reachability check of Require.
const pingTimeout = 10 * time.Second

// Require returns a Docker client configured from the environment (DOCKER_HOST
// etc.) with API version negotiation, closed when the test ends. When the
// daemon does not answer a ping, the test fails if CI=true and is skipped
// otherwise, with the reason. Under -short (the fast tier) it skips.
func Require(t testing.TB) *client.Client {
	t.Helper()
	if testing.Short() {
		// The fast tier (go test -short ./...) runs without Docker.
		t.Skip("dockertest: short mode: skipping a test that needs the Docker Engine")
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		unreachable(t, "configure Docker client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		unreachable(t, "Docker Engine at %s is unreachable: %v", cli.DaemonHost(), err)
	}
	return cli
}

func unreachable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("dockertest: "+format+" (CI=true: integration tests must run)", args...)
	}
	t.Skipf("dockertest: SKIPPING integration test: "+format+" (set CI=true to fail instead)", args...)
}
