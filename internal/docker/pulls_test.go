package docker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/reference"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func TestDefaultPullPolicy(t *testing.T) {
	for ref, want := range map[string]string{
		"nginx":                        protocol.PullAlways,
		"nginx:latest":                 protocol.PullAlways,
		"registry.example.com/app":     protocol.PullAlways,
		"localhost:5000/app:latest":    protocol.PullAlways,
		"nginx:1.27":                   protocol.PullMissing,
		"localhost:5000/app:v2":        protocol.PullMissing,
		"ghcr.io/org/app:latest-rc":    protocol.PullMissing,
		"nginx@sha256:" + sha256Zero:   protocol.PullMissing,
		"nginx:1@sha256:" + sha256Zero: protocol.PullMissing,
	} {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if got := defaultPullPolicy(named); got != want {
			t.Errorf("defaultPullPolicy(%s) = %s, want %s", ref, got, want)
		}
	}
}

const sha256Zero = "0000000000000000000000000000000000000000000000000000000000000000"

// TestPullGroupShares: concurrent callers for one reference share one pull
// and all see its progress and outcome; another reference pulls on its own;
// a caller after the end starts a new pull.
func TestPullGroupShares(t *testing.T) {
	var g pullGroup
	var pulls atomic.Int32
	release := make(chan struct{})
	pull := func(ctx context.Context, ref string, progress func(string, string)) error {
		pulls.Add(1)
		<-release
		progress("pull", ref+": done")
		if ref == "bad:1" {
			return errors.New("registry says no")
		}
		return nil
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	seen := make([]atomic.Int32, n)
	for i := range n {
		ref := "app:1"
		if i%2 == 1 {
			ref = "bad:1"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.do(context.Background(), ref, func(string, string) { seen[i].Add(1) }, pull)
		}()
	}
	testsupport.WaitFor(t, "all callers joined", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		total := 0
		for _, c := range g.calls {
			total += c.waiters
		}
		return total == n
	})
	close(release)
	wg.Wait()
	if got := pulls.Load(); got != 2 {
		t.Errorf("%d pulls for 20 creates of 2 images, want 2", got)
	}
	for i := range n {
		if wantErr := i%2 == 1; (errs[i] != nil) != wantErr {
			t.Errorf("caller %d: %v", i, errs[i])
		}
		if seen[i].Load() != 1 {
			t.Errorf("caller %d saw %d progress reports, want 1", i, seen[i].Load())
		}
	}
	if err := g.do(context.Background(), "app:1", nil, pull); err != nil || pulls.Load() != 3 {
		t.Errorf("a later create: %v, %d pulls; want a new pull", err, pulls.Load())
	}
}

// TestPullGroupCallersLeave: a caller that gives up does not end the pull
// for the others; when the last one gives up the pull is cancelled.
func TestPullGroupCallersLeave(t *testing.T) {
	var g pullGroup
	started := make(chan struct{})
	cancelled := make(chan struct{})
	pull := func(ctx context.Context, ref string, progress func(string, string)) error {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	res := make(chan error, 2)
	go func() { res <- g.do(ctx1, "app:1", nil, pull) }()
	<-started
	go func() { res <- g.do(ctx2, "app:1", nil, pull) }()
	testsupport.WaitFor(t, "second caller joined", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.calls["app:1"] != nil && g.calls["app:1"].waiters == 2
	})
	cancel1()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("first caller: %v", err)
	}
	select {
	case <-cancelled:
		t.Fatal("the pull was cancelled while a caller still waits")
	case <-time.After(50 * time.Millisecond):
	}
	cancel2()
	<-res
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the pull goes on after every caller gave up")
	}
	// A new caller for the abandoned reference starts a fresh pull.
	fresh := make(chan struct{})
	err := g.do(context.Background(), "app:1", nil, func(ctx context.Context, ref string, progress func(string, string)) error {
		close(fresh)
		return ctx.Err()
	})
	if err != nil {
		t.Errorf("fresh pull: %v", err)
	}
}
