package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// itTimeout is the safety net of one integration test's Docker work.
const itTimeout = 90 * time.Second

// itEnv is one integration test's view of the real Docker Engine: an Engine
// with a node id and volume root of its own, a raw client for checking
// effects, and the workload image.
type itEnv struct {
	t    *testing.T
	ctx  context.Context
	cli  *client.Client
	eng  *Engine
	img  string
	root string // the volume root
	node string
}

func newIT(t *testing.T, opts ...func(*Options)) *itEnv {
	t.Helper()
	cli := dockertest.Require(t)
	img := dockertest.WorkloadImage(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), itTimeout)
	t.Cleanup(cancel)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	it := &itEnv{t: t, ctx: ctx, cli: cli, img: img, root: root, node: "it-" + randHex(4)}
	o := Options{NodeID: it.node, VolumeRoots: []string{root}, CallTimeout: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	it.eng = it.engine(o)
	return it
}

func (it *itEnv) engine(o Options) *Engine {
	it.t.Helper()
	e, err := New(o)
	if err != nil {
		it.t.Fatalf("New: %v", err)
	}
	it.t.Cleanup(func() { _ = e.Close() })
	return e
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var nameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// name returns a unique container name for this test; the container is
// removed when the test ends.
func (it *itEnv) name(suffix string) string {
	it.t.Helper()
	base := strings.ToLower(nameUnsafe.ReplaceAllString(strings.TrimPrefix(it.t.Name(), "Test"), "-"))
	n := "lormas-it-" + base + "-" + suffix + "-" + randHex(3)
	it.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = it.cli.ContainerRemove(ctx, n, container.RemoveOptions{Force: true})
	})
	return n
}

// egg is an eggConfig for the workload with the given flags. The image is
// local, so pulling is skipped.
func (it *itEnv) egg(args ...string) *protocol.EggConfig {
	return &protocol.EggConfig{Image: it.img, Command: args, PullPolicy: protocol.PullNever}
}

func (it *itEnv) createCmd(name string, egg *protocol.EggConfig) *protocol.Command {
	return &protocol.Command{Type: protocol.TypeCommand, Action: protocol.ActionCreate, ContainerID: name, EggConfig: egg}
}

// create creates a container through the Engine and fails the test on error.
func (it *itEnv) create(cmd *protocol.Command) (dockerID string, warnings []string) {
	it.t.Helper()
	res, warnings, err := it.eng.Create(it.ctx, createOf(it.t, cmd), nil)
	if err != nil {
		it.t.Fatalf("Create %s: %v", cmd.ContainerID, err)
	}
	if res.ContainerID == "" {
		it.t.Fatalf("Create %s: empty container id", cmd.ContainerID)
	}
	return res.ContainerID, warnings
}

// run creates and starts a workload container with the given flags.
func (it *itEnv) run(suffix string, tty bool, args ...string) string {
	it.t.Helper()
	name := it.name(suffix)
	egg := it.egg(args...)
	egg.TTY = &tty
	it.create(it.createCmd(name, egg))
	if err := it.eng.Start(it.ctx, name); err != nil {
		it.t.Fatalf("Start %s: %v", name, err)
	}
	return name
}

func (it *itEnv) inspect(name string) container.InspectResponse {
	it.t.Helper()
	c, err := it.cli.ContainerInspect(it.ctx, name)
	if err != nil {
		it.t.Fatalf("ContainerInspect %s: %v", name, err)
	}
	return c
}

// waitExit waits until the container is not running and returns its exit code.
func (it *itEnv) waitExit(name string) int64 {
	it.t.Helper()
	waitC, errC := it.cli.ContainerWait(it.ctx, name, container.WaitConditionNotRunning)
	select {
	case w := <-waitC:
		return w.StatusCode
	case err := <-errC:
		it.t.Fatalf("wait for %s: %v", name, err)
	}
	return 0
}

func wantCode(t *testing.T, what string, err error, code protocol.Code) {
	t.Helper()
	if got := protocol.CodeOf(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %s", what, err, got, code)
	}
}

func intp(i int) *int { return &i }
