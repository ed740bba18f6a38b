package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/server/store"
)

// flushChunk bounds one write transaction of reported node state, so that
// REST writes (node creation, token rotation) never wait behind a batch
// of a whole fleet's heartbeats for long.
const flushChunk = 500

// reports keeps what agents report about their nodes (the latest heartbeat
// and agent_identify) in memory and writes it to the store in batches,
// every interval and at shutdown, instead of one synchronous SQLite write
// per heartbeat on the agent's read loop: SQLite has one writer, and at a
// fleet's heartbeat rate that writer was the server's limit.
//
// Readers (GET /api/nodes) see the latest report at once: overlay applies
// what is not written yet over a node read from the store. Memory holds at
// most one report per node (bounded by bytes: maxStoredJSON each).
// Reports are lost only when the server dies without shutting down, at
// most one interval's worth; heartbeats are state, not history.
type reports struct {
	store    *store.Store
	log      *slog.Logger
	interval time.Duration

	mu       sync.Mutex
	pending  map[string]store.NodeUpdate // not written yet
	flushing map[string]store.NodeUpdate // being written; still shown
	spare    map[string]store.NodeUpdate // the last one written, emptied for reuse

	flushMu sync.Mutex // one flush at a time
	stop    chan struct{}
	done    chan struct{}
	failLog *logging.Limiter
}

func newReports(st *store.Store, interval time.Duration, log *slog.Logger) *reports {
	return &reports{
		store: st, log: log, interval: interval,
		pending: map[string]store.NodeUpdate{},
		stop:    make(chan struct{}), done: make(chan struct{}),
		failLog: logging.Every(time.Minute),
	}
}

// heartbeat records a node's heartbeat.
func (r *reports) heartbeat(nodeID string, at time.Time, resources json.RawMessage) {
	r.mu.Lock()
	u := r.pending[nodeID]
	u.ID, u.HasHeartbeat, u.LastHeartbeat, u.Resources = nodeID, true, at, resources
	r.pending[nodeID] = u
	r.mu.Unlock()
}

// identify records what a node's agent said about itself.
func (r *reports) identify(nodeID, version string, info json.RawMessage) {
	r.mu.Lock()
	u := r.pending[nodeID]
	u.ID, u.HasIdentify, u.AgentVersion, u.AgentInfo = nodeID, true, version, info
	r.pending[nodeID] = u
	r.mu.Unlock()
}

// overlay applies the reports not yet written over n, as read from the
// store.
func (r *reports) overlay(n *store.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range []map[string]store.NodeUpdate{r.flushing, r.pending} {
		u, ok := m[n.ID]
		if !ok {
			continue
		}
		if u.HasHeartbeat {
			n.LastHeartbeat, n.Resources = u.LastHeartbeat, u.Resources
		}
		if u.HasIdentify {
			n.AgentVersion, n.AgentInfo = u.AgentVersion, u.AgentInfo
		}
	}
}

// forget drops the reports of a deleted node.
func (r *reports) forget(nodeID string) {
	r.mu.Lock()
	delete(r.pending, nodeID)
	r.mu.Unlock()
}

// run writes the reports every interval until close.
func (r *reports) run() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), r.interval+storeTimeout)
			_ = r.flush(ctx, r.interval/2)
			cancel()
		}
	}
}

// close stops the periodic writes and writes what is left (the sessions
// are closed by then, so nothing new arrives).
func (r *reports) close(ctx context.Context) error {
	close(r.stop)
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return r.flush(ctx, 0)
}

// flush writes the pending reports, its chunks spread over spread (0: at
// once), so that a fleet's batch is a steady trickle of small transactions
// rather than a burst that the API's requests queue behind. What fails to
// be written stays pending (unless a newer report replaced it) for the next
// flush.
func (r *reports) flush(ctx context.Context, spread time.Duration) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	// The map written last time is reused: a fleet's map is megabytes,
	// and it would be garbage every interval.
	next := r.spare
	if next == nil {
		next = make(map[string]store.NodeUpdate, len(r.pending))
	}
	r.flushing, r.pending, r.spare = r.pending, next, nil
	batch := make([]store.NodeUpdate, 0, len(r.flushing))
	for _, u := range r.flushing {
		batch = append(batch, u)
	}
	r.mu.Unlock()

	var failed []store.NodeUpdate
	var firstErr error
	written, gone := 0, 0
	chunks := (len(batch) + flushChunk - 1) / flushChunk
	if chunks > 1 {
		// Chunks of consecutive rows share pages (a third of the writes
		// of chunks in the map's order); unordered is only slower.
		if err := r.store.InTableOrder(ctx, batch); err != nil {
			r.log.Debug("heartbeats written unordered", "err", err)
		}
	}
	var pause time.Duration
	if chunks > 1 {
		pause = spread / time.Duration(chunks)
	}
	for i := 0; len(batch) > 0; i++ {
		if i > 0 && pause > 0 {
			select {
			case <-time.After(pause):
			case <-r.stop: // shutting down: write the rest at once
				pause = 0
			case <-ctx.Done():
			}
		}
		chunk := batch[:min(flushChunk, len(batch))]
		batch = batch[len(chunk):]
		applied, err := r.store.RecordNodeUpdates(ctx, chunk)
		if err != nil {
			failed = append(failed, chunk...)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		written += applied
		gone += len(chunk) - applied
	}

	r.mu.Lock()
	for _, u := range failed {
		if _, newer := r.pending[u.ID]; !newer {
			r.pending[u.ID] = u
		}
	}
	clear(r.flushing)
	r.spare, r.flushing = r.flushing, nil
	r.mu.Unlock()
	if firstErr != nil {
		if ok, suppressed := r.failLog.Allow(); ok {
			r.log.Error("write heartbeats and agent details", "err", firstErr, "kept", len(failed), "written", written,
				"suppressedLogs", suppressed)
		}
		return firstErr
	}
	if gone > 0 {
		r.log.Debug("reports of deleted nodes discarded", "count", gone)
	}
	return nil
}
