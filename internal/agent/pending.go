package agent

import (
	"fmt"
	"sync"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Bounds of what the agent holds for commands accepted and not finished
// (docs/security.md: a server sending thousands of large commands for a blocked
// container must not exhaust the agent's memory). Bytes are bounded by
// MAX_PENDING_BYTES for the node and a share of it per container; counts
// bound the fixed cost of many small commands.
const (
	DefaultMaxPendingBytes = 64 << 20
	pendingShareDivisor    = 4     // a container may hold a quarter of MAX_PENDING_BYTES
	maxPending             = 10000 // commands accepted and not finished, node-wide
	maxPendingPerContainer = 1000  // the same for one container
)

// Reasons a command is refused for room, as metric label values.
const (
	RefusedNodeBytes         = "node_bytes"
	RefusedNodeCommands      = "node_commands"
	RefusedContainerBytes    = "container_bytes"
	RefusedContainerCommands = "container_commands"
	RefusedTooLarge          = "too_large"
)

// RefusalObserver is implemented by an Observer that also counts commands
// refused because the pending bounds were reached (reason is one of the
// Refused* constants). It is separate from Observer so existing observers
// keep compiling.
type RefusalObserver interface {
	CommandRefused(reason string)
}

// pendingLimits are the bounds of a pendingBudget.
type pendingLimits struct {
	bytes      int64 // all pending commands
	shareBytes int64 // the pending commands of one container
	count      int
	shareCount int
}

func newPendingLimits(maxBytes int64) pendingLimits {
	return pendingLimits{
		bytes:      maxBytes,
		shareBytes: maxBytes / pendingShareDivisor,
		count:      maxPending,
		shareCount: maxPendingPerContainer,
	}
}

// pendingBudget accounts for the memory held by commands accepted and not
// finished: in total, and per container (the key of the dispatcher's lane;
// "" for commands without one, which count only towards the total).
// Accounting is by the estimated bytes each command keeps in memory
// (commandCost), never by trusting the server.
type pendingBudget struct {
	lim pendingLimits

	mu    sync.Mutex
	bytes int64
	count int
	keys  map[string]*keyUsage
}

type keyUsage struct {
	bytes int64
	count int
}

func newPendingBudget(lim pendingLimits) *pendingBudget {
	return &pendingBudget{lim: lim, keys: map[string]*keyUsage{}}
}

// reservation is the room held by one command until release. It is safe
// to release more than once.
type reservation struct {
	b     *pendingBudget
	key   string
	bytes int64
	done  bool // released; guarded by b.mu
}

// refusal is why a command found no room: an *protocol.Error for its
// result plus a metric reason.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// reserve takes n bytes and one command slot for key, or reports why it
// cannot.
func (b *pendingBudget) reserve(key string, n int64) (*reservation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(key, n, n, 1); err != nil {
		return nil, err
	}
	b.add(key, n, 1)
	return &reservation{b: b, key: key, bytes: n}, nil
}

// resize changes the bytes held by r to n (the command's cost once
// decoded). Growing fails, leaving r as it was, when n does not fit.
func (r *reservation) resize(n int64) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.done {
		return nil
	}
	delta := n - r.bytes
	if delta > 0 {
		if err := b.check(r.key, n, delta, 0); err != nil {
			return err
		}
	}
	b.add(r.key, delta, 0)
	r.bytes = n
	return nil
}

// release returns the room of r.
func (r *reservation) release() {
	if r == nil {
		return
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	b.add(r.key, -r.bytes, -1)
}

// add changes the bytes and commands held for key. Call with b.mu held.
func (b *pendingBudget) add(key string, n int64, commands int) {
	b.bytes += n
	b.count += commands
	if key == "" {
		return
	}
	u := b.keys[key]
	if u == nil {
		u = &keyUsage{}
		b.keys[key] = u
	}
	u.bytes += n
	u.count += commands
	if u.count == 0 {
		delete(b.keys, key)
	}
}

// check reports whether a command of size bytes for key may take add more
// bytes and slot more command slots. Call with b.mu held.
func (b *pendingBudget) check(key string, size, add int64, slot int) error {
	lim := b.lim
	if size > lim.bytes || key != "" && size > lim.shareBytes {
		return &refusal{RefusedTooLarge, protocol.Errorf(protocol.CodeInvalid,
			"command too large for this node: it needs about %s in memory, more than the %s that the commands of one container may hold (a quarter of MAX_PENDING_BYTES %s); it was not executed, and retrying cannot help",
			formatBytes(size), formatBytes(lim.shareBytes), formatBytes(lim.bytes))}
	}
	var u keyUsage
	if p := b.keys[key]; p != nil && key != "" {
		u = *p
	}
	held := size - add // already counted for this command
	switch {
	case key != "" && u.count+slot > lim.shareCount:
		return &refusal{RefusedContainerCommands, protocol.Errorf(protocol.CodeUnavailable,
			"agent busy: the queue of container %q is full (%d commands waiting or running, at most %d); the command was not executed: retry once its earlier commands have finished",
			key, u.count, lim.shareCount)}
	case key != "" && u.bytes+add > lim.shareBytes:
		return &refusal{RefusedContainerBytes, protocol.Errorf(protocol.CodeUnavailable,
			"agent busy: the queue of container %q is full (its other pending commands hold %s of the %s one container may hold, a quarter of MAX_PENDING_BYTES; this one needs %s); the command was not executed: retry once its earlier commands have finished",
			key, formatBytes(u.bytes-held), formatBytes(lim.shareBytes), formatBytes(size))}
	case b.count+slot > lim.count:
		return &refusal{RefusedNodeCommands, protocol.Errorf(protocol.CodeUnavailable,
			"agent busy: the node's command queue is full (%d commands waiting or running, at most %d); the command was not executed: retry later",
			b.count, lim.count)}
	case b.bytes+add > lim.bytes:
		return &refusal{RefusedNodeBytes, protocol.Errorf(protocol.CodeUnavailable,
			"agent busy: the node's command queue is full (pending commands hold %s of MAX_PENDING_BYTES %s; this one needs %s); the command was not executed: retry later",
			formatBytes(b.bytes-held), formatBytes(lim.bytes), formatBytes(size))}
	}
	return nil
}

// usage reports the bytes and commands held, in total or for key.
func (b *pendingBudget) usage(key string) (int64, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if key == "" {
		return b.bytes, b.count
	}
	if u := b.keys[key]; u != nil {
		return u.bytes, u.count
	}
	return 0, 0
}

// formatBytes renders n for people: "512 B", "700.0 KiB", "16.0 MiB".
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// memoryHeadroom is what MemoryLimit allows beyond the agent's byte bounds:
// the runtime, goroutines, the Docker client and the commands running.
const memoryHeadroom = 64 << 20

// MemoryLimit is a soft limit for the Go runtime (debug.SetMemoryLimit),
// derived from the agent's byte bounds: what pending commands, queued
// results and the dedup table may hold (stored results, and the ids at 16
// bytes each), frames read ahead and being decoded or encoded (32 of the
// largest), plus memoryHeadroom. With it the heap stays near what the
// bounds allow, where GOGC alone lets it grow to twice the live heap
// between collections (defaults: 272 MiB).
func (a *Agent) MemoryLimit() int64 {
	return a.opts.MaxPendingBytes + outboxMaxBytes + a.resultStoreBytes() + 16*maxCommandIDs + 32*int64(a.opts.MaxMessageBytes) + memoryHeadroom
}

// resultStoreBytes is RESULT_STORE_BYTES, or its default.
func (a *Agent) resultStoreBytes() int64 {
	if a.opts.ResultStoreBytes > 0 {
		return a.opts.ResultStoreBytes
	}
	return DefaultResultStoreBytes
}
