package packaging

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/lormas/lormas-agent/internal/dockertest"
)

// TestTestScriptCleanup: scripts/test.sh removes what the tests leave behind
// (issue 11): containers made from test images, running or not, the test
// images (labelled org.lormas.test) and untagged images built on top of
// them, children first, and nothing else. The run is restricted to this
// test's own label value (LORMAS_CLEANUP_LABEL), since other tests may be
// using their images at this moment.
func TestTestScriptCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images")
	}
	cli := dockertest.Require(t)
	base := dockertest.WorkloadImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	label := uniqueName("cleanup-")
	tag := "lormas-cleanup-test:" + label
	if err := dockertest.BuildImage(ctx, cli, tag, label, "FROM "+base+"\n"); err != nil {
		t.Fatal(err)
	}
	// An untagged image built on the test image whose label says nothing:
	// it goes as the test image's descendant.
	child := buildUntagged(ctx, t, cli, "FROM "+tag+"\nENV CHILD=1\n", map[string]string{"org.lormas.test": ""})
	var ids []string
	for i, img := range []string{tag, child} {
		c, err := cli.ContainerCreate(ctx, &container.Config{Image: img}, nil, nil, nil, uniqueName("lormas-cleanup-test-"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
		if i == 0 { // one running, one only created
			if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_ = cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
		}
		for _, img := range []string{child, tag} {
			_, _ = cli.ImageRemove(context.Background(), img, image.RemoveOptions{Force: true})
		}
	})

	r := run(ctx, repoRoot(t), []string{"LORMAS_CLEANUP_LABEL=" + label}, "bash", "scripts/test.sh", "--cleanup")
	if r.err != nil {
		t.Fatalf("test.sh --cleanup: %s", r)
	}
	// Three images: the test image, the child and the classic builder's
	// intermediate image between them.
	if !strings.Contains(r.stdout, "removed 2 test containers and 3 test images") {
		t.Errorf("test.sh --cleanup said:\n%s", r.stdout)
	}
	for _, id := range ids {
		if _, err := cli.ContainerInspect(ctx, id); !cerrdefs.IsNotFound(err) {
			t.Errorf("container %.12s left behind (%v)", id, err)
		}
	}
	for _, img := range []string{tag, child} {
		if _, err := cli.ImageInspect(ctx, img); !cerrdefs.IsNotFound(err) {
			t.Errorf("image %s left behind (%v)", img, err)
		}
	}
	if _, err := cli.ImageInspect(ctx, base); err != nil {
		t.Errorf("the workload image, another label's, was removed: %v", err)
	}
}

// buildUntagged builds an image from a Dockerfile with the classic builder,
// without a tag, and returns its id.
func buildUntagged(ctx context.Context, t *testing.T, cli *client.Client, dockerfile string, labels map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(dockerfile)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{Remove: true, ForceRemove: true, Version: build.BuilderV1, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id := ""
	dec := json.NewDecoder(resp.Body)
	for {
		var msg jsonmessage.JSONMessage
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if msg.Error != nil {
			t.Fatalf("build: %s", msg.Error.Message)
		}
		if msg.Aux != nil {
			var aux struct{ ID string }
			if json.Unmarshal(*msg.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		}
	}
	if id == "" {
		t.Fatal("build reported no image id")
	}
	return id
}
