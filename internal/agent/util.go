package agent

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// observer makes a nil Observer safe to call.
type observer struct{ o Observer }

func (o observer) Connected(up bool) {
	if o.o != nil {
		o.o.Connected(up)
	}
}

func (o observer) Reconnect() {
	if o.o != nil {
		o.o.Reconnect()
	}
}

func (o observer) CommandDone(a protocol.Action, s protocol.Status, took time.Duration) {
	if o.o != nil {
		o.o.CommandDone(a, s, took)
	}
}

func (o observer) OutboxDepth(n int) {
	if o.o != nil {
		o.o.OutboxDepth(n)
	}
}

func (o observer) LogLinesStreamed(n int) {
	if o.o != nil {
		o.o.LogLinesStreamed(n)
	}
}

// CommandRefused counts a command refused for room, when the Observer
// also implements RefusalObserver.
func (o observer) CommandRefused(reason string) {
	if r, ok := o.o.(RefusalObserver); ok {
		r.CommandRefused(reason)
	}
}

func (o observer) RuntimeError(a protocol.Action) {
	if o.o != nil {
		o.o.RuntimeError(a)
	}
}

// every rate-limits a log line that a failing loop would repeat.
type every struct {
	mu         sync.Mutex
	period     time.Duration
	last       time.Time
	suppressed int
}

func newEvery(period time.Duration) *every { return &every{period: period} }

// allow reports whether to log now, and how many calls were suppressed
// since the last allowed one.
func (e *every) allow() (bool, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < e.period {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// newCommandID returns a random RFC 4122 version 4 UUID, for commands that
// arrive without an id (the seed agent does the same).
func newCommandID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
