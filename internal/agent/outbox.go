package agent

import (
	"log/slog"
	"sync"
	"time"
)

// outbox holds encoded command results until the connection has written
// them (SPEC 4.2). Results are removed only after a successful write, so a
// result being written when the connection died is sent again after the
// next identify. It is bounded by count and bytes; when full the oldest
// result is dropped and logged.
type outbox struct {
	mu       sync.Mutex
	items    []outItem
	bytes    int
	limit    int
	maxBytes int
	seq      uint64
	dropped  int
	notify   chan struct{} // one token: something was pushed
	dropLog  *every
	log      *slog.Logger
	obs      observer
}

type outItem struct {
	seq       uint64
	commandID string
	data      []byte
}

func newOutbox(limit, maxBytes int, log *slog.Logger, obs observer) *outbox {
	return &outbox{limit: limit, maxBytes: maxBytes, notify: make(chan struct{}, 1), dropLog: newEvery(time.Second), log: log, obs: obs}
}

// push appends a result, dropping the oldest ones beyond the bounds.
func (o *outbox) push(commandID string, data []byte) {
	o.mu.Lock()
	o.seq++
	o.items = append(o.items, outItem{seq: o.seq, commandID: commandID, data: data})
	o.bytes += len(data)
	for len(o.items) > 1 && (len(o.items) > o.limit || o.bytes > o.maxBytes) {
		old := o.items[0]
		o.items[0] = outItem{}
		o.items = o.items[1:]
		o.bytes -= len(old.data)
		o.dropped++
		if ok, suppressed := o.dropLog.allow(); ok {
			o.log.Warn("outbox full: dropped the oldest undelivered result",
				"commandId", old.commandID, "droppedTotal", o.dropped, "suppressedLogs", suppressed, "limit", o.limit)
		}
	}
	n := len(o.items)
	o.mu.Unlock()
	o.obs.OutboxDepth(n)
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// peek returns the oldest result without removing it.
func (o *outbox) peek() (outItem, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.items) == 0 {
		return outItem{}, false
	}
	return o.items[0], true
}

// remove drops the result seq once written; a result already dropped for
// space is ignored.
func (o *outbox) remove(seq uint64) {
	o.mu.Lock()
	if len(o.items) == 0 || o.items[0].seq != seq {
		o.mu.Unlock()
		return
	}
	o.bytes -= len(o.items[0].data)
	o.items[0] = outItem{}
	o.items = o.items[1:]
	n := len(o.items)
	o.mu.Unlock()
	o.obs.OutboxDepth(n)
}

// len is the number of results waiting.
func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.items)
}

// wait fires after a push; use it when peek found nothing.
func (o *outbox) wait() <-chan struct{} { return o.notify }
