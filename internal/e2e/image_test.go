package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// seedImage builds, FROM the workload image, an image whose defaults make the
// seed's create example (which has no command) print three stdout and two
// stderr lines and serve HTTP on port 80, so the seed's JSON can be sent
// with only its image replaced.
func seedImage(t testing.TB, cli *client.Client, workload string) string {
	t.Helper()
	tag := "lormas-e2e-seed:" + workload[len(workload)-12:]
	dockerfile := fmt.Sprintf("FROM %s\nENV WORKLOAD_LINES=3 WORKLOAD_STDERR_LINES=2 WORKLOAD_LISTEN=:80\n", workload)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(dockerfile)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ImageBuild(ctxT(t, 2*time.Minute), &buf, build.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true, Version: build.BuilderV1,
		Labels: map[string]string{"org.lormas.test": "e2e-seed"},
	})
	if err != nil {
		t.Fatalf("build %s: %v", tag, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg jsonmessage.JSONMessage
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("build %s: %v", tag, err)
		}
		if msg.Error != nil {
			t.Fatalf("build %s: %s", tag, msg.Error.Message)
		}
	}
	return tag
}
