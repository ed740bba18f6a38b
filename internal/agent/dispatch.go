package agent

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// dispatcher runs commands: one at a time per container, in arrival order
// (a keyed FIFO queue), and at most a global number at once across
// containers. Commands without a container (list) have no ordering key.
// A command still queued can be cancelled; a running one cannot (a Docker
// operation cut in half helps nobody).
type dispatcher struct {
	ctx context.Context // commands run under it; cancelled when shutdown gives up
	sem *semaphore.Weighted

	mu       sync.Mutex
	lanes    map[string][]*job // per key: jobs not yet taken by the lane's goroutine
	pending  map[string]*job   // by command id: accepted, not started
	inflight int               // jobs and detached tasks not finished
	changed  chan struct{}     // closed and replaced when inflight changes
	wg       sync.WaitGroup

	// handoff gives a lane to a lane goroutine that finished its own
	// and waits for another (laneLinger); quit ends those waits. At most
	// cap(lingering), the concurrency limit, wait: more could never run
	// at once, and a hostile server's thousand lanes must not leave a
	// thousand goroutines behind for a second after their commands.
	handoff   chan string
	lingering chan struct{}
	quit      chan struct{}
	quitOnce  sync.Once
}

// laneLinger is how long a lane goroutine whose lane ran empty waits to
// take another before it ends. A goroutine started for a command starts
// on a small stack and grows it (copying it, twice for a logs result: a
// tenth of the agent's CPU per command); one that ran a command before
// has grown it already. Commands a second apart reuse it.
const laneLinger = time.Second

// job is one command. run executes it; abort answers it when it is
// cancelled before it started or cannot start (shutdown). rsv is its room
// in the pending budget, released when it ends or is cancelled (run and
// abort may release it earlier, before delivering the result).
type job struct {
	id, key   string
	run       func(ctx context.Context)
	abort     func(reason error)
	rsv       *reservation
	started   bool
	cancelled bool
}

func newDispatcher(ctx context.Context, limit int) *dispatcher {
	return &dispatcher{
		ctx:       ctx,
		sem:       semaphore.NewWeighted(int64(limit)),
		lanes:     map[string][]*job{},
		pending:   map[string]*job{},
		changed:   make(chan struct{}),
		handoff:   make(chan string),
		lingering: make(chan struct{}, limit),
		quit:      make(chan struct{}),
	}
}

// submit queues j behind earlier jobs with the same key.
func (d *dispatcher) submit(j *job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending[j.id] = j
	d.setInflight(d.inflight + 1)
	if j.key == "" {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.runJob(j)
		}()
		return
	}
	q, busy := d.lanes[j.key]
	d.lanes[j.key] = append(q, j)
	if !busy {
		select {
		case d.handoff <- j.key: // a lingering lane goroutine takes it
		default:
			d.wg.Add(1)
			go d.lane(j.key)
		}
	}
}

// lane runs the jobs of one key in order, then those of any lane handed
// to it within laneLinger, then ends.
func (d *dispatcher) lane(key string) {
	defer d.wg.Done()
	linger := time.NewTimer(laneLinger)
	defer linger.Stop()
	for {
		d.runLane(key)
		select {
		case d.lingering <- struct{}{}:
		default:
			return // enough goroutines wait already
		}
		linger.Reset(laneLinger)
		var ok bool
		select {
		case key, ok = <-d.handoff:
		case <-linger.C:
		case <-d.quit:
		}
		<-d.lingering
		if !ok {
			return
		}
	}
}

// runLane runs the jobs queued under key until there are none.
func (d *dispatcher) runLane(key string) {
	for {
		d.mu.Lock()
		q := d.lanes[key]
		if len(q) == 0 {
			delete(d.lanes, key)
			d.mu.Unlock()
			return
		}
		j := q[0]
		q[0] = nil
		d.lanes[key] = q[1:]
		d.mu.Unlock()
		d.runJob(j)
	}
}

func (d *dispatcher) runJob(j *job) {
	defer d.finished()
	defer j.rsv.release()
	if d.isCancelled(j) {
		return
	}
	if err := d.sem.Acquire(d.ctx, 1); err != nil {
		if d.claim(j) {
			j.abort(errShuttingDown)
		}
		return
	}
	defer d.sem.Release(1)
	if !d.claim(j) {
		return
	}
	if d.ctx.Err() != nil {
		j.abort(errShuttingDown)
		return
	}
	j.run(d.ctx)
}

// claim marks j started unless it was cancelled.
func (d *dispatcher) claim(j *job) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if j.cancelled {
		return false
	}
	j.started = true
	delete(d.pending, j.id)
	return true
}

func (d *dispatcher) isCancelled(j *job) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return j.cancelled
}

// cancel aborts the pending job id; it reports false when no such job is
// waiting (unknown, or already running).
func (d *dispatcher) cancel(id string, reason error) bool {
	d.mu.Lock()
	j, ok := d.pending[id]
	if !ok || j.started || j.cancelled {
		d.mu.Unlock()
		return false
	}
	j.cancelled = true
	delete(d.pending, id)
	// The lane holds j until it gets to it: keep nothing large alive.
	abort := j.abort
	j.run, j.abort = nil, nil
	d.mu.Unlock()
	j.rsv.release()
	abort(reason)
	return true
}

// spawn runs f as a detached task that shutdown waits for like a job
// (follow-log streams: they must not hold their container's lane).
func (d *dispatcher) spawn(f func()) {
	d.mu.Lock()
	d.setInflight(d.inflight + 1)
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer d.finished()
		f()
	}()
}

func (d *dispatcher) finished() {
	d.mu.Lock()
	d.setInflight(d.inflight - 1)
	d.mu.Unlock()
}

// setInflight updates the count and wakes waiters; call with d.mu held.
func (d *dispatcher) setInflight(n int) {
	d.inflight = n
	close(d.changed)
	d.changed = make(chan struct{})
}

// count is the number of jobs and tasks not finished.
func (d *dispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight
}

// waitIdle waits until nothing is in flight or timeout passes, and reports
// whether it got idle.
func (d *dispatcher) waitIdle(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		d.mu.Lock()
		n, ch := d.inflight, d.changed
		d.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// wait ends the lane goroutines waiting for work and waits for all the
// dispatcher's goroutines; call after waitIdle. Commands submitted later
// still run (on goroutines of their own).
func (d *dispatcher) wait() {
	d.quitOnce.Do(func() { close(d.quit) })
	d.wg.Wait()
}
