package docker

import (
	"context"
	"sync"
)

// pullGroup lets concurrent creates of one image share one pull (docs/protocol.md):
// twenty creates of a new image cost one registry round trip instead of
// twenty pulls queueing behind each other. The first caller starts the
// pull; later callers for the same reference wait for its outcome and get
// its progress too. The pull runs detached from any one caller: it goes on
// while at least one caller still waits and is cancelled when the last one
// gives up (within the pull timeout in any case). A create that arrives
// after a pull ended starts a new one: nothing is cached.
type pullGroup struct {
	mu    sync.Mutex
	calls map[string]*pullCall
}

// pullCall is one running pull and the callers waiting for it. Its
// waiters and watchers are guarded by the group's mutex.
type pullCall struct {
	ctx    context.Context // the pull's own, detached from the callers'
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed

	waiters  int
	watchers map[int]func(stage, detail string)
	next     int
}

// pullFunc pulls ref, reporting progress, until done or ctx ends.
type pullFunc func(ctx context.Context, ref string, progress func(stage, detail string)) error

// do pulls ref with pull, or joins the pull of ref already running, and
// returns its outcome; ctx ends only this caller's wait.
func (g *pullGroup) do(ctx context.Context, ref string, progress func(stage, detail string), pull pullFunc) error {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*pullCall{}
	}
	c := g.calls[ref]
	start := c == nil || c.ctx.Err() != nil // none, or abandoned by all its callers
	if start {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &pullCall{ctx: pctx, cancel: cancel, done: make(chan struct{}), watchers: map[int]func(string, string){}}
		g.calls[ref] = c
	}
	me := c.next
	c.next++
	c.waiters++
	if progress != nil {
		c.watchers[me] = progress
	}
	g.mu.Unlock()
	if start {
		go g.run(c, ref, pull)
	}

	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		delete(c.watchers, me)
		if c.waiters == 0 {
			c.cancel()
		}
		g.mu.Unlock()
		return ctx.Err()
	}
}

func (g *pullGroup) run(c *pullCall, ref string, pull pullFunc) {
	err := pull(c.ctx, ref, func(stage, detail string) { g.report(c, stage, detail) })
	g.mu.Lock()
	if g.calls[ref] == c {
		delete(g.calls, ref)
	}
	g.mu.Unlock()
	c.err = err
	c.cancel()
	close(c.done)
}

// report hands a progress stage to every caller waiting for c.
func (g *pullGroup) report(c *pullCall, stage, detail string) {
	g.mu.Lock()
	fns := make([]func(string, string), 0, len(c.watchers))
	for _, f := range c.watchers {
		fns = append(fns, f)
	}
	g.mu.Unlock()
	for _, f := range fns {
		f(stage, detail)
	}
}
