package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/dockertest"
)

// seedImage builds, FROM the workload image, an image whose defaults make the
// seed's create example (which has no command) print three stdout and two
// stderr lines and serve HTTP on port 80, so the seed's JSON can be sent
// with only its image replaced.
func seedImage(t testing.TB, cli *client.Client, workload string) string {
	t.Helper()
	tag := "lormas-e2e-seed:" + workload[len(workload)-12:]
	dockerfile := fmt.Sprintf("FROM %s\nENV WORKLOAD_LINES=3 WORKLOAD_STDERR_LINES=2 WORKLOAD_LISTEN=:80\n", workload)
	if err := dockertest.BuildImage(ctxT(t, 2*time.Minute), cli, tag, "e2e-seed", dockerfile); err != nil {
		t.Fatal(err)
	}
	return tag
}
