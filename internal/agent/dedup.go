package agent

import (
	"sync"
	"time"
)

// seenState is what the dedup table knows about a command id.
type seenState int

const (
	seenNew     seenState = iota // not seen: now recorded as running
	seenRunning                  // accepted earlier, result not produced yet
	seenDone                     // finished; the stored result is returned
)

// dedup remembers command ids for a while (SPEC 4.2: one hour) so a
// command the server sends again is not executed twice. Memory is bounded
// by entry count and bytes (ids and stored results); evicting an entry
// early only means a very late duplicate runs again.
type dedup struct {
	mu         sync.Mutex
	ttl        time.Duration
	maxEntries int
	maxBytes   int
	now        func() time.Time
	entries    map[string]*seenEntry
	order      []string // ids by first sight, oldest first
	bytes      int
}

type seenEntry struct {
	at     time.Time
	done   bool
	result []byte
}

func newDedup(ttl time.Duration, maxEntries, maxBytes int) *dedup {
	return &dedup{ttl: ttl, maxEntries: maxEntries, maxBytes: maxBytes, now: time.Now, entries: map[string]*seenEntry{}}
}

// begin records id as running unless it is known; it returns what was
// known and, for a finished command, its encoded result.
func (d *dedup) begin(id string) (seenState, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if state, result := d.state(id); state != seenNew {
		return state, result
	}
	d.entries[id] = &seenEntry{at: d.now()}
	d.order = append(d.order, id)
	d.bytes += len(id)
	d.prune()
	return seenNew, nil
}

// lookup is begin without recording a new id.
func (d *dedup) lookup(id string) (seenState, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state(id)
}

// state reports what is known about id. Called with d.mu held.
func (d *dedup) state(id string) (seenState, []byte) {
	d.prune()
	if e, ok := d.entries[id]; ok {
		if e.done {
			return seenDone, e.result
		}
		return seenRunning, nil
	}
	return seenNew, nil
}

// complete stores the result of id.
func (d *dedup) complete(id string, result []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[id]
	if !ok || e.done {
		return
	}
	e.done, e.result = true, result
	d.bytes += len(result)
	d.prune()
}

// prune drops expired entries and the oldest beyond the bounds. Called
// with d.mu held.
func (d *dedup) prune() {
	cutoff := d.now().Add(-d.ttl)
	for len(d.order) > 0 {
		id := d.order[0]
		e, ok := d.entries[id]
		if ok && !e.at.Before(cutoff) && len(d.entries) <= d.maxEntries && d.bytes <= d.maxBytes {
			return
		}
		d.order[0] = ""
		d.order = d.order[1:]
		if ok {
			d.bytes -= len(e.result) + len(id)
			delete(d.entries, id)
		}
	}
}

// size is the number of ids remembered.
func (d *dedup) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}
