package agent

import (
	"log/slog"
	"sync"
	"time"

	"github.com/lormas/lormas-agent/internal/logging"
)

// outbox holds encoded command results until the server has provably read
// them (docs/protocol.md). A result written to the connection stays queued until
// the pong to a ping written after it comes back (transport's Acked): a
// result written into a connection that went half-open is sent again,
// in order, after the next identify, instead of being lost with the
// socket buffers. The server may thus see a result twice; it keeps the
// first (docs/protocol.md, Delivery guarantees).
//
// Results waiting to be written and those written but not confirmed are
// one queue, in order: the written ones are a prefix of it. The queue is
// bounded by count and bytes; when full the oldest result is dropped and
// logged.
type outbox struct {
	mu       sync.Mutex
	items    []outItem
	written  int    // items[:written] are written on connection epoch, awaiting confirmation
	epoch    uint64 // the connection the writes belong to (rewind starts a new one)
	bytes    int
	limit    int
	maxBytes int
	seq      uint64
	dropped  int
	resent   int           // results written again on a later connection
	notify   chan struct{} // one token: something was pushed
	drained  chan struct{} // closed while the queue is empty (settle)
	dropLog  *logging.Limiter
	log      *slog.Logger
	obs      observer
}

type outItem struct {
	seq       uint64
	commandID string
	data      []byte
	pos       uint64 // position on the connection it was written on (epoch); 0 until written
	tries     int    // connections it was written on
}

func newOutbox(limit, maxBytes int, log *slog.Logger, obs Observer) *outbox {
	drained := make(chan struct{})
	close(drained)
	return &outbox{limit: limit, maxBytes: maxBytes, notify: make(chan struct{}, 1), drained: drained,
		dropLog: logging.Every(time.Second), log: log, obs: observer{obs}}
}

// settle keeps drained in step with the queue: closed while it is empty,
// open while it holds a result. Call with o.mu held.
func (o *outbox) settle() {
	empty := len(o.items) == 0
	select {
	case <-o.drained:
		if !empty {
			o.drained = make(chan struct{})
		}
	default:
		if empty {
			close(o.drained)
		}
	}
}

// empty returns a channel that is closed once no result waits to be
// written or confirmed (at once, when none does now).
func (o *outbox) empty() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.drained
}

// push appends a result, dropping the oldest ones beyond the bounds, and
// wakes the session's writer (wait).
func (o *outbox) push(commandID string, data []byte) {
	o.add(commandID, data)
	o.signal()
}

// add is push without the wake-up, for a caller that writes the outbox
// itself (session.flush) and calls signal only when it could not: waking a
// writer that finds nothing left to write cost two goroutine wake-ups per
// command.
func (o *outbox) add(commandID string, data []byte) {
	o.mu.Lock()
	o.seq++
	o.items = append(o.items, outItem{seq: o.seq, commandID: commandID, data: data})
	o.bytes += len(data)
	for len(o.items) > 1 && (len(o.items) > o.limit || o.bytes > o.maxBytes) {
		old := o.popFront()
		o.dropped++
		o.obs.ResultsDropped(1)
		if ok, suppressed := o.dropLog.Allow(); ok {
			o.log.Warn("outbox full: dropped the oldest undelivered result",
				"commandId", old.commandID, "droppedTotal", o.dropped, "suppressedLogs", suppressed, "limit", o.limit)
		}
	}
	o.settle()
	n := len(o.items)
	o.mu.Unlock()
	o.obs.OutboxDepth(n)
}

// signal wakes the writer waiting on wait.
func (o *outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// popFront removes the oldest result. Call with o.mu held.
func (o *outbox) popFront() outItem {
	it := o.items[0]
	o.items[0] = outItem{}
	o.items = o.items[1:]
	o.bytes -= len(it.data)
	if o.written > 0 {
		o.written--
	}
	return it
}

// rewind starts a new connection: every result not confirmed is to be
// written again, in order. It returns the connection's epoch for next,
// wrote and confirm.
func (o *outbox) rewind() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.epoch++
	o.written = 0
	return o.epoch
}

// next returns the oldest result not yet written on connection epoch.
func (o *outbox) next(epoch uint64) (outItem, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if epoch != o.epoch || o.written >= len(o.items) {
		return outItem{}, false
	}
	return o.items[o.written], true
}

// wrote records that result seq was written on connection epoch at pos.
// It reports whether the result was written before, on an earlier
// connection (a re-send).
func (o *outbox) wrote(epoch, seq, pos uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if epoch != o.epoch || o.written >= len(o.items) || o.items[o.written].seq != seq {
		return false // dropped for space meanwhile
	}
	it := &o.items[o.written]
	it.pos = pos
	it.tries++
	o.written++
	if it.tries > 1 {
		o.resent++
		return true
	}
	return false
}

// confirm removes the results written on connection epoch up to position
// acked: the server has read them.
func (o *outbox) confirm(epoch, acked uint64) {
	o.mu.Lock()
	if epoch != o.epoch {
		o.mu.Unlock()
		return
	}
	removed := 0
	for o.written > 0 && o.items[0].pos <= acked {
		o.popFront()
		removed++
	}
	o.settle()
	n := len(o.items)
	o.mu.Unlock()
	if removed > 0 {
		o.obs.OutboxDepth(n)
	}
}

// remove drops result seq, the next to write on connection epoch (it can
// never be sent: too large).
func (o *outbox) remove(epoch, seq uint64) {
	o.mu.Lock()
	if epoch != o.epoch || o.written >= len(o.items) || o.items[o.written].seq != seq {
		o.mu.Unlock()
		return
	}
	o.bytes -= len(o.items[o.written].data)
	o.items = append(o.items[:o.written], o.items[o.written+1:]...)
	o.settle()
	n := len(o.items)
	o.mu.Unlock()
	o.obs.OutboxDepth(n)
}

// peek returns the oldest result.
func (o *outbox) peek() (outItem, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.items) == 0 {
		return outItem{}, false
	}
	return o.items[0], true
}

// holds reports whether a result of command id is on its way: waiting to
// be written, or written on the current connection and not confirmed yet.
// Either way it reaches the server (confirmed, or sent again on the next
// connection) without being queued again.
func (o *outbox) holds(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, it := range o.items {
		if it.commandID == id {
			return true
		}
	}
	return false
}

// len is the number of results not confirmed, written or not.
func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items)
}

// unwritten is the number of results not yet written on the current
// connection.
func (o *outbox) unwritten() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items) - o.written
}

// resends is the number of results written again on a later connection.
func (o *outbox) resends() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.resent
}

// wait fires after a push (or signal); use it when next found nothing.
func (o *outbox) wait() <-chan struct{} { return o.notify }
