package docker

import (
	"context"
	"testing"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestIndexAgainstDocker runs the index against the real engine: commands
// on an indexed container are one call; a container removed behind the
// agent's back and recreated under its name without the labels is refused
// even before the destroy event has been read, and the event then drops
// the entry.
func TestIndexAgainstDocker(t *testing.T) {
	it := newIT(t)
	ctx, cancel := context.WithCancel(it.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = it.eng.Events(ctx, func(protocol.ContainerEvent) {})
	}()
	t.Cleanup(func() { cancel(); <-done })
	testsupport.WaitFor(t, "events subscription", func() bool {
		it.eng.index.mu.Lock()
		defer it.eng.index.mu.Unlock()
		return it.eng.index.live > 0
	})

	name := it.run("web", false, "-lines", "3")
	waitForLine(it, name, "stdout line 3")
	entry, ok := it.eng.index.get(name)
	if !ok {
		t.Fatal("the created container is not indexed")
	}
	if c := it.inspect(name); entry.id != c.ID {
		t.Fatalf("indexed id %s, Docker's %s", entry.id, c.ID)
	}
	if lines, err := it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name})); err != nil || len(lines) != 3 {
		t.Fatalf("Logs: %q, %v", lines, err)
	}

	// Replace it behind the agent's back: remove it and create an
	// unmanaged container under the same name at once.
	if err := it.cli.ContainerRemove(it.ctx, entry.id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	it.eng.index.mu.Lock() // as if the destroy event were still on its way
	it.eng.index.byName[name] = entry
	it.eng.index.byID[entry.id] = name
	it.eng.index.mu.Unlock()
	impostor, err := it.cli.ContainerCreate(it.ctx, &container.Config{Image: it.img, Cmd: []string{"-lines", "1"},
		Labels: map[string]string{"owner": "someone else"}}, &container.HostConfig{}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	_, err = it.eng.Logs(it.ctx, logsOf(t, &protocol.Command{Action: protocol.ActionLogs, ContainerID: name}))
	wantCode(t, "logs of the unmanaged replacement", err, protocol.CodeForbidden)
	err = it.eng.Start(it.ctx, name)
	wantCode(t, "start of the unmanaged replacement", err, protocol.CodeForbidden)
	if _, err := it.eng.Delete(it.ctx, name); protocol.CodeOf(err) != protocol.CodeForbidden {
		t.Fatalf("delete of the unmanaged replacement: %v, want forbidden", err)
	}
	if c := it.inspect(name); c.ID != impostor.ID || (c.State != nil && c.State.Running) {
		t.Errorf("the unmanaged container was touched: id %s (want %s), running %v", c.ID, impostor.ID, c.State.Running)
	}

	// The events stream drops entries of removed containers by itself.
	second := it.run("db", false)
	e2, ok := it.eng.index.get(second)
	if !ok {
		t.Fatal("second container not indexed")
	}
	if err := it.cli.ContainerRemove(it.ctx, e2.id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "the destroy event to drop the entry", func() bool {
		_, ok := it.eng.index.get(second)
		return !ok
	})
	if absent, err := it.eng.Delete(it.ctx, second); err != nil || !absent {
		t.Errorf("Delete of the removed container: %v, %v; want alreadyAbsent", absent, err)
	}
}
