package packaging

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/lormas/lormas-agent/internal/dockertest"
)

// The images the tests build from the repository's Dockerfile. The build
// arguments are constants, so a rebuild with unchanged sources is all cache.
const (
	agentTag     = "lormas-agent:pkgtest"
	serverTag    = "lormas-server:pkgtest"
	buildVersion = "0.0.0-pkgtest"
	buildCommit  = "pkgtest"
	// buildTimeout bounds both image builds (a cold build downloads the
	// modules and compiles both binaries on 2 cores).
	buildTimeout = 15 * time.Minute
)

// builtImages are the agent and server images of the Dockerfile.
type builtImages struct {
	agent, server image.InspectResponse
}

var images struct {
	mu    sync.Mutex
	built *builtImages
	err   string
}

// buildImages builds the Dockerfile's two targets once per test process, with
// the legacy builder (DOCKER_BUILDKIT=0: no BuildKit-only syntax may creep in)
// on top of stand-in base images. The agent is built WITHOUT --target: it must
// be the default target.
func buildImages(t *testing.T) builtImages {
	t.Helper()
	cli := dockertest.Require(t)
	docker := requireTool(t, "docker", "")
	images.mu.Lock()
	defer images.mu.Unlock()
	if images.built != nil {
		return *images.built
	}
	if images.err != "" {
		t.Fatalf("image build failed earlier in this run: %s", images.err)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		images.err = "see the first failing test"
		t.Fatalf(format, args...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	repo := repoRoot(t)
	bases := dockerfileBases(t, filepath.Join(repo, "Dockerfile"))
	if len(bases) != 2 || bases[0] != builderImage || bases[1] != runtimeImage {
		fail("Dockerfile bases %v, want [%s %s] (docs/deploy.md: golang builder, distroless static nonroot)", bases, builderImage, runtimeImage)
	}
	for _, line := range ensureStandins(ctx, t, cli) {
		t.Logf("base image %s", line)
	}

	build := func(tag string, target ...string) image.InspectResponse {
		t.Helper()
		args := []string{"build", "--force-rm", "--tag", tag, "--build-arg", "VERSION=" + buildVersion, "--build-arg", "COMMIT=" + buildCommit}
		if len(target) > 0 {
			args = append(args, "--target", target[0])
		}
		args = append(args, repo)
		start := time.Now()
		r := run(ctx, repo, []string{"DOCKER_BUILDKIT=0"}, docker, args...)
		if r.err != nil {
			fail("docker %s: %s", strings.Join(args, " "), r)
		}
		inspect, err := cli.ImageInspect(ctx, tag)
		if err != nil {
			fail("inspect %s: %v", tag, err)
		}
		cached := strings.Count(r.stdout, "Using cache")
		t.Logf("built %s in %s (%d steps from cache): %s", tag, time.Since(start).Round(100*time.Millisecond), cached, imageSummary(inspect))
		return inspect
	}
	built := &builtImages{
		server: build(serverTag, "server"),
		agent:  build(agentTag),
	}
	images.built = built
	return *built
}
