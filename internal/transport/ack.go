package transport

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// Delivery confirmation.
//
// A frame handed to the operating system is not delivered: on a connection
// that went half-open it waits in socket buffers until the keepalive gives
// up, and is lost with the connection. A pong proves more. The server reads
// its socket in order and answers a ping only when it reads it, so its pong
// proves it read every frame written before that ping. (A data frame from
// the server proves nothing of the kind: the server may have sent it
// before reading anything.)
//
// Every data frame written gets a position (1, 2, ...: SendTracked returns
// it). Every ping the Conn writes, the keepalive's and those RequestAck
// asks for, carries the position of the last data frame written before it,
// after a nonce of the connection; the echo of a ping of this connection
// in a pong moves Acked to that position. A requested ping goes out
// ackDelay after the request, covering whatever was written by then, and
// one requested ping waits for its pong at a time: requests meanwhile are
// answered by the next ping, so a busy connection confirms once a round
// trip plus ackDelay, not once a frame.
//
// A server that answers no ping at all (RFC 6455 asks every endpoint to)
// would leave every frame unconfirmed: when a ping has gone unanswered for
// ReadTimeout while the server kept sending, the Conn logs it once and
// counts frames as acknowledged when written, as before.
type ackState struct {
	nonce   [8]byte
	written atomic.Uint64 // data frames written; written under the writing token
	acked   atomic.Uint64 // position proven read by the server
	readAt  atomic.Int64  // when a frame was last read (unix nanoseconds)
	noPong  atomic.Bool   // the server answers no ping: written counts as acked
	notify  chan struct{} // one token: acked moved

	mu         sync.Mutex
	pinged     uint64      // highest position a ping of this connection carried
	inflight   bool        // a requested ping waits for its pong
	wanted     bool        // RequestAck came while one was in flight
	scheduled  bool        // a requested ping waits for its delay (timer)
	timer      *time.Timer // writes the requested ping; nil until the first request
	unanswered time.Time   // since when a ping waits for a pong; zero when none
}

// ackPayloadSize is the payload of the Conn's pings: nonce and position.
const ackPayloadSize = 16

// ackDelay is how long a requested ping waits before it is written, so
// that the results of commands in quick succession are confirmed by one
// ping and pong instead of one each: written at once, that exchange was
// about a fifth of the agent's CPU per command (a frame each way, a wake-up
// of the writer and of the outbox). A result waits that much longer for its
// confirmation; its delivery is not delayed.
const ackDelay = 20 * time.Millisecond

func (a *ackState) init() {
	a.notify = make(chan struct{}, 1)
	_, _ = rand.Read(a.nonce[:])
}

// Acked is the position (see SendTracked) up to which the server has
// provably read the frames written on this connection.
func (c *Conn) Acked() uint64 { return c.ack.acked.Load() }

// AckNotify fires (one token, never blocking the connection) when Acked
// has moved.
func (c *Conn) AckNotify() <-chan struct{} { return c.ack.notify }

// Written is the position of the last data frame written.
func (c *Conn) Written() uint64 { return c.ack.written.Load() }

// RequestAck asks the server to confirm the frames written so far: a ping
// goes out ackDelay later carrying the last position written by then,
// unless a ping already covers this one; while a requested ping waits for
// its pong, the next is requested when the pong arrives. It never blocks.
func (c *Conn) RequestAck() {
	a := &c.ack
	pos := a.written.Load()
	if a.noPong.Load() {
		c.setAcked(pos)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case pos <= a.pinged, a.scheduled:
	case a.inflight:
		a.wanted = true
	default:
		a.scheduled = true
		if a.timer == nil {
			a.timer = time.AfterFunc(ackDelay, c.requestedPing)
		} else {
			a.timer.Reset(ackDelay)
		}
	}
}

// requestedPing queues the ping RequestAck scheduled, with the last
// position written now. After the connection ended it does nothing.
func (c *Conn) requestedPing() {
	a := &c.ack
	pos := a.written.Load()
	a.mu.Lock()
	a.scheduled = false
	if pos <= a.pinged || a.inflight {
		a.mu.Unlock()
		return
	}
	prev := a.pinged
	a.pinged, a.inflight, a.wanted = pos, true, false
	if a.unanswered.IsZero() {
		a.unanswered = time.Now()
	}
	a.mu.Unlock()
	if err := c.control(gws.OpcodePing, a.payload(pos)); err != nil {
		// The priority lane is full or the connection is gone: the next
		// request or keepalive ping covers these frames.
		a.mu.Lock()
		if a.pinged == pos {
			a.pinged = prev
		}
		a.inflight = false
		a.mu.Unlock()
	}
}

// keepalivePing is the payload of the keepalive's ping: it confirms what
// was written before it too.
func (c *Conn) keepalivePing() []byte {
	a := &c.ack
	pos := a.written.Load()
	a.mu.Lock()
	a.pinged = max(a.pinged, pos)
	if a.unanswered.IsZero() {
		a.unanswered = time.Now()
	}
	a.mu.Unlock()
	return a.payload(pos)
}

func (a *ackState) payload(pos uint64) []byte {
	p := make([]byte, ackPayloadSize)
	copy(p, a.nonce[:])
	binary.BigEndian.PutUint64(p[8:], pos)
	return p
}

// onPong handles a pong on the read goroutine: an echo of one of this
// connection's pings confirms its position; anything else is ignored.
func (c *Conn) onPong(p []byte) {
	a := &c.ack
	if len(p) != ackPayloadSize || [8]byte(p[:8]) != a.nonce {
		return
	}
	pos := binary.BigEndian.Uint64(p[8:])
	a.mu.Lock()
	if pos > a.pinged { // never sent: not a proof of anything
		a.mu.Unlock()
		return
	}
	a.unanswered = time.Time{}
	if pos == a.pinged {
		a.inflight = false
	}
	again := a.wanted && !a.inflight
	a.wanted = a.wanted && !again
	a.mu.Unlock()
	c.setAcked(pos)
	if again {
		c.RequestAck()
	}
}

// setAcked moves Acked forward to pos and notifies.
func (c *Conn) setAcked(pos uint64) {
	a := &c.ack
	for {
		old := a.acked.Load()
		if pos <= old {
			return
		}
		if a.acked.CompareAndSwap(old, pos) {
			break
		}
	}
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// wrote records a data frame written (under the writing token) and
// returns its position.
func (c *Conn) wrote() uint64 {
	pos := c.ack.written.Add(1)
	if c.ack.noPong.Load() {
		c.setAcked(pos)
	}
	return pos
}

// checkPongs runs at each keepalive tick: a ping unanswered for
// ReadTimeout while the server kept sending frames means a server that
// answers no pings; from then on frames count as acknowledged when
// written.
func (c *Conn) checkPongs(now time.Time) {
	a := &c.ack
	if a.noPong.Load() {
		return
	}
	a.mu.Lock()
	since := a.unanswered
	a.mu.Unlock()
	if since.IsZero() || now.Sub(since) < c.cfg.ReadTimeout || a.readAt.Load() <= since.UnixNano() {
		return
	}
	c.log.Warn("the server answers no WebSocket pings: results now count as delivered once written, and are not sent again if this connection turns out dead",
		"unansweredFor", now.Sub(since).Round(time.Millisecond))
	a.noPong.Store(true)
	c.setAcked(a.written.Load())
}
