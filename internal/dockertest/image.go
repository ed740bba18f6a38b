package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// WorkloadRepo is the repository of the workload image; the tag is a hash of
// the workload's source and build recipe.
const WorkloadRepo = "lormas-test-workload"

// workloadFiles is the workload's source: main.go and the files of its
// other modes.
//
//go:embed workload/*.go
var workloadFiles embed.FS

const workloadDockerfile = "FROM scratch\nCOPY workload /workload\nENTRYPOINT [\"/workload\"]\n"

// buildTimeout bounds compiling the workload and building its image.
const buildTimeout = 5 * time.Minute

var workload struct {
	mu  sync.Mutex
	tag string
}

// WorkloadImage returns the tag of the test workload image, building it when
// no image with that tag exists yet. The tag is derived from the workload's
// source, so every test process of the same source shares one image; builds
// are serialised within the process and, with a lock file, across processes.
func WorkloadImage(t testing.TB) string {
	t.Helper()
	cli := Require(t)
	workload.mu.Lock()
	defer workload.mu.Unlock()
	if workload.tag != "" {
		return workload.tag
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	tag, err := EnsureWorkloadImage(ctx, cli)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	workload.tag = tag
	return tag
}

// EnsureWorkloadImage is WorkloadImage for programs (scripts/logbench):
// it builds the image of this source when missing and returns its tag.
func EnsureWorkloadImage(ctx context.Context, cli *client.Client) (string, error) {
	tag := WorkloadRepo + ":" + workloadHash()
	if err := ensureImage(ctx, cli, tag); err != nil {
		return "", fmt.Errorf("workload image %s: %w", tag, err)
	}
	return tag, nil
}

func workloadHash() string {
	h := sha256.New()
	for _, f := range workloadSources() {
		h.Write([]byte(f.name))
		h.Write(f.data)
	}
	h.Write([]byte(workloadDockerfile))
	h.Write([]byte(runtime.GOARCH))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

type sourceFile struct {
	name string
	data []byte
}

// workloadSources returns the workload's Go files in name order.
func workloadSources() []sourceFile {
	entries, err := workloadFiles.ReadDir("workload")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	var files []sourceFile
	for _, e := range entries {
		data, err := workloadFiles.ReadFile("workload/" + e.Name())
		if err != nil {
			panic(err)
		}
		files = append(files, sourceFile{name: e.Name(), data: data})
	}
	return files
}

func ensureImage(ctx context.Context, cli *client.Client, tag string) error {
	if ok, err := imageExists(ctx, cli, tag); err != nil || ok {
		return err
	}
	unlock, err := lockFile(filepath.Join(os.TempDir(), strings.ReplaceAll(tag, ":", "-")+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	// Another process may have built it while this one waited for the lock.
	if ok, err := imageExists(ctx, cli, tag); err != nil || ok {
		return err
	}
	bin, err := compileWorkload(ctx)
	if err != nil {
		return err
	}
	return BuildImage(ctx, cli, tag, "workload", workloadDockerfile, File{Name: "workload", Mode: 0o755, Data: bin})
}

func imageExists(ctx context.Context, cli *client.Client, tag string) (bool, error) {
	_, err := cli.ImageInspect(ctx, tag)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("inspect image: %w", err)
	}
}

// compileWorkload builds the workload as a static linux binary with the Go
// toolchain that runs the tests, in a throwaway module.
func compileWorkload(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "lormas-workload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{"go.mod": "module workload\n\ngo 1.21\n"}
	for _, f := range workloadSources() {
		files[f.name] = string(f.data)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	out := filepath.Join(dir, "workload")
	cmd := exec.CommandContext(ctx, goBinary(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH,
		"GOFLAGS=-buildvcs=false", "GOTOOLCHAIN=local", "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build workload: %w: %s", err, msg)
	}
	return os.ReadFile(out)
}

// goBinary finds the go command of the toolchain in use: the one on PATH,
// resolved through its own GOROOT, else the GOROOT the test binary was built
// with.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		if root, err := exec.Command(p, "env", "GOROOT").Output(); err == nil {
			if bin := filepath.Join(strings.TrimSpace(string(root)), "bin", "go"); fileExists(bin) {
				return bin
			}
		}
		return p
	}
	//lint:ignore SA1019 the fallback when no go is on PATH
	return filepath.Join(runtime.GOROOT(), "bin", "go") //nolint:staticcheck
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// File is one file of an in-memory build context.
type File struct {
	Name string
	Mode int64
	Data []byte
}

// BuildImage builds tag with the classic builder from a Dockerfile and
// files held in memory, labelled org.lormas.test=<label>, and reads the
// build stream to its end, failing on any error reported inside it.
func BuildImage(ctx context.Context, cli *client.Client, tag, label, dockerfile string, files ...File) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range append([]File{{Name: "Dockerfile", Mode: 0o644, Data: []byte(dockerfile)}}, files...) {
		if err := tw.WriteHeader(&tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
		Labels:      map[string]string{"org.lormas.test": label},
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg jsonmessage.JSONMessage
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("read build output of %s: %w", tag, err)
		}
		if msg.Error != nil {
			return fmt.Errorf("build image %s: %s", tag, msg.Error.Message)
		}
	}
	if ok, err := imageExists(ctx, cli, tag); err != nil || !ok {
		return fmt.Errorf("build image: %s missing after a successful build (%v)", tag, err)
	}
	return nil
}
