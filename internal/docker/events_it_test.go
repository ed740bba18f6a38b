package docker

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/policy"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestEventsBurstRelaysEvery: 20 managed containers started, then stopped,
// all at once, three times. Every start, kill, die and stop event the
// daemon publishes (read directly from the Docker API in the same run) is
// relayed, exactly once: the daemon stamps these bursts within
// microseconds of each other and publishes them out of time order, and
// the reader used to drop an event stamped before the last one it saw.
func TestEventsBurstRelaysEvery(t *testing.T) {
	if testing.Short() {
		t.Skip("a Docker burst: not in the -short tier")
	}
	const (
		containers = 12
		rounds     = 3
	)
	it := newIT(t)
	names := make([]string, containers)
	for i := range names {
		names[i] = it.name(fmt.Sprint("burst", i))
		it.create(it.createCmd(names[i], it.egg()))
	}

	// The reference: the daemon's own stream of this test's containers.
	ctx, cancel := context.WithCancel(it.ctx)
	defer cancel()
	ref, refErr := it.referenceEvents(ctx)
	var mu sync.Mutex
	relayed := map[string]int{}
	done := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() {
		done <- it.eng.WatchEvents(ctx, func(ev protocol.ContainerEvent) {
			mu.Lock()
			relayed[ev.ContainerID+" "+ev.Action+" "+ev.Timestamp]++
			mu.Unlock()
		}, nil)
	}()
	// Wait until the engine's subscription is up: a start of a probe
	// container shows in its stream.
	probe := it.name("burst-probe")
	it.create(it.createCmd(probe, it.egg()))
	go func() {
		defer close(subscribed)
		for ctx.Err() == nil {
			_ = it.cli.ContainerStart(ctx, probe, container.StartOptions{})
			_ = it.cli.ContainerKill(ctx, probe, "SIGKILL")
			mu.Lock()
			n := 0
			for k, c := range relayed {
				if len(k) > len(probe) && k[:len(probe)] == probe {
					n += c
				}
			}
			mu.Unlock()
			if n > 0 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	<-subscribed

	all := func(op func(name string) error) {
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Go(func() {
				if err := op(n); err != nil {
					t.Errorf("%s: %v", n, err)
				}
			})
		}
		wg.Wait()
	}
	for range rounds {
		all(func(n string) error { return it.cli.ContainerStart(it.ctx, n, container.StartOptions{}) })
		all(func(n string) error {
			timeout := 1
			return it.cli.ContainerStop(it.ctx, n, container.StopOptions{Timeout: &timeout})
		})
	}

	// Every event of the burst containers the daemon published.
	want := map[string]int{}
	isBurst := func(name string) bool { return slices.Contains(names, name) }
	counted := func(action string) bool { return slices.Contains([]string{"start", "kill", "die", "stop"}, action) }
	seen := map[events.Action]int{}
	for seen[events.ActionStart] < containers*rounds || seen[events.ActionDie] < containers*rounds || seen[events.ActionStop] < containers*rounds {
		select {
		case m := <-ref:
			name := m.Actor.Attributes["name"]
			if !isBurst(name) || !counted(string(m.Action)) {
				continue
			}
			want[name+" "+string(m.Action)+" "+protocol.Timestamp(time.Unix(0, m.TimeNano))]++
			seen[m.Action]++
		case err := <-refErr:
			t.Fatalf("reference events stream: %v", err)
		case <-it.ctx.Done():
			t.Fatalf("the daemon published %v, want %d starts, dies and stops", seen, containers*rounds)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		missing, dup := compareEvents(want, relayed, isBurst, counted)
		mu.Unlock()
		if len(missing) == 0 {
			if len(dup) > 0 {
				t.Errorf("relayed more than once: %q", dup)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events not relayed: %q", len(missing), len(want), missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d events of %d containers relayed, each once", len(want), containers)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchEvents: %v", err)
	}
}

// compareEvents lists the events of want not relayed, and those relayed
// more than once.
func compareEvents(want, relayed map[string]int, isBurst func(string) bool, counted func(string) bool) (missing, dup []string) {
	for k := range want {
		if relayed[k] == 0 {
			missing = append(missing, k)
		}
	}
	for k, n := range relayed {
		var name, action string
		if _, err := fmt.Sscanf(k, "%s %s", &name, &action); err == nil && isBurst(name) && counted(action) && n > 1 {
			dup = append(dup, k)
		}
	}
	slices.Sort(missing)
	return missing, dup
}

// TestEventsReplayedAfterDockerOutage: the Docker daemon is unreachable
// for the agent alone (its socket cut, as a restart of a socket proxy or
// a daemon too busy to accept would do) while a managed container stops;
// once the socket is back, the engine resubscribes and relays the kill,
// die and stop that happened meanwhile, from the daemon's own buffer,
// each once.
func TestEventsReplayedAfterDockerOutage(t *testing.T) {
	it := newIT(t)
	sock, ok := strings.CutPrefix(it.cli.DaemonHost(), "unix://")
	if !ok {
		t.Fatalf("DOCKER_HOST %s: this test proxies the daemon's unix socket", it.cli.DaemonHost())
	}
	proxy, err := dockertest.NewSocketProxy(filepath.Join(t.TempDir(), "docker.sock"), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+proxy.Path), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	logs := &testsupport.Buffer{}
	eng, err := newEngine(cli, Options{NodeID: it.node, VolumeRoots: []string{it.root}, CallTimeout: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })

	name := it.name("outage")
	it.create(it.createCmd(name, it.egg()))
	ctx, cancel := context.WithCancel(it.ctx)
	defer cancel()
	ref, refErr := it.referenceEvents(ctx)
	var mu sync.Mutex
	relayed := map[string]int{}
	var missed atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- eng.WatchEvents(ctx, func(ev protocol.ContainerEvent) {
			mu.Lock()
			relayed[ev.ContainerID+" "+ev.Action+" "+ev.Timestamp]++
			mu.Unlock()
		}, func() { missed.Add(1) })
	}()
	// want collects the events of the container the daemon publishes,
	// until it has one of each of actions.
	want := map[string]int{}
	collect := func(actions ...string) {
		t.Helper()
		for len(actions) > 0 {
			select {
			case m := <-ref:
				if m.Actor.Attributes["name"] != name || !slices.Contains(eventActions, string(m.Action)) {
					continue
				}
				want[name+" "+string(m.Action)+" "+protocol.Timestamp(time.Unix(0, m.TimeNano))]++
				if i := slices.Index(actions, string(m.Action)); i >= 0 {
					actions = slices.Delete(actions, i, i+1)
				}
			case err := <-refErr:
				t.Fatalf("reference events stream: %v", err)
			case <-it.ctx.Done():
				t.Fatalf("the daemon did not publish %q", actions)
			}
		}
	}
	allRelayed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k, n := range want {
			if relayed[k] != n {
				return false
			}
		}
		return true
	}

	if err := it.cli.ContainerStart(it.ctx, name, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	collect("start")
	testsupport.WaitFor(t, "the start relayed", allRelayed)

	proxy.Cut()
	timeout := 1
	if err := it.cli.ContainerStop(it.ctx, name, container.StopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	collect("kill", "die", "stop")
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "the events of the outage relayed", allRelayed)
	testsupport.WaitFor(t, "the replay checked", func() bool {
		return strings.Contains(logs.String(), "replay covered the gap") || strings.Contains(logs.String(), "did not reach back")
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchEvents: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range relayed {
		if n > 1 {
			t.Errorf("%s relayed %d times", k, n)
		}
	}
	// The daemon keeps its last 256 events of every kind, from every
	// client: on a busy daemon the last event read before the cut may have
	// left its buffer, and then an inventory is due.
	t.Logf("%d events relayed; gap reported to the caller %d times", len(relayed), missed.Load())
}

// referenceEvents is the daemon's own stream of the container events of
// this test's node: what the engine's relay is compared with.
func (it *itEnv) referenceEvents(ctx context.Context) (<-chan events.Message, <-chan error) {
	return it.cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", policy.LabelNode+"="+it.node))})
}
