package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
)

// Frame is one data frame received from the server.
type Frame struct {
	Data   []byte // owned by the receiver
	Binary bool   // a binary frame; the protocol uses text frames only
}

// Conn is an established connection. Frames delivers what the server sends;
// Send and SendPriority queue frames for the one writer goroutine; Done is
// closed once both goroutines have ended, and Err then tells why.
type Conn struct {
	cfg    Config
	log    *slog.Logger
	socket *gws.Conn
	peer   *peerConn // the socket under gws (and TLS); nil in tests that build no socket

	frames chan Frame
	queue  chan *sendReq
	prio   chan control

	closing chan struct{} // Close was called
	// writing is held (capacity 1) by whoever writes a data or control
	// frame: the writer goroutine, or a Send that found the writer idle
	// and writes on its own goroutine (saving two goroutine hand-offs on
	// every command result).
	writing   chan struct{}
	closeOnce sync.Once
	wmu       sync.Mutex // orders the writer's deadlines against Close's
	localCode atomic.Uint32

	readDone   chan struct{}
	writerDone chan struct{}
	done       chan struct{}
	readErr    error // from OnClose, before readDone
	writeErr   error // the first write failure; guarded by wmu
	err        error // before done

	ack ackState // delivery confirmation (ack.go)
}

type sendReq struct {
	data []byte
	pos  uint64 // set by the writer before done
	done chan error
}

type control struct {
	op   gws.Opcode
	data []byte
}

// prioQueue is the capacity of the priority lane (pongs).
const prioQueue = 16

// framesQueueBytes bounds what is read ahead of the receiver by bytes, not
// only by count: the frames channel holds at most this many bytes' worth of
// the largest frames (between 1 and 64 frames).
const framesQueueBytes = 8 << 20

func framesQueue(maxMessageBytes int) int {
	return max(1, min(64, framesQueueBytes/max(1, maxMessageBytes)))
}

func newConn(cfg Config) *Conn {
	c := &Conn{
		cfg:        cfg,
		log:        cfg.Logger,
		frames:     make(chan Frame, framesQueue(cfg.MaxMessageBytes)),
		queue:      make(chan *sendReq, cfg.SendQueue),
		prio:       make(chan control, prioQueue),
		closing:    make(chan struct{}),
		writing:    make(chan struct{}, 1),
		readDone:   make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.ack.init()
	return c
}

func (c *Conn) start(socket *gws.Conn) {
	c.socket = socket
	go func() {
		socket.ReadLoop()
		close(c.frames)
		close(c.readDone)
	}()
	go c.writeLoop()
}

// Frames delivers the server's data frames in order. It is closed when the
// connection ends; the receiver must keep draining it until then.
func (c *Conn) Frames() <-chan Frame { return c.frames }

// Done is closed when the connection has ended and its goroutines are gone.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err reports why the connection ended; valid once Done is closed.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Send queues a text frame and waits until it has been written. ctx bounds
// only the wait for a place in the bounded queue (backpressure from a slow
// server); once queued, the write itself is bounded by the write timeout.
// A nil error means the frame was handed to the operating system. A frame
// over MaxMessageBytes fails with ErrFrameTooLarge and leaves the
// connection up.
func (c *Conn) Send(ctx context.Context, data []byte) error {
	_, err := c.SendTracked(ctx, data)
	return err
}

// SendTracked is Send that also returns the frame's position on this
// connection: the frame has provably been read by the server once Acked
// reaches it (ack.go).
func (c *Conn) SendTracked(ctx context.Context, data []byte) (uint64, error) {
	if len(data) > c.cfg.MaxMessageBytes {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(data), c.cfg.MaxMessageBytes)
	}
	if ok, pos, err := c.sendDirect(data); ok {
		return pos, err
	}
	r := &sendReq{data: data, done: make(chan error, 1)}
	select {
	case c.queue <- r:
	case <-c.writerDone:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case err := <-r.done:
		return r.pos, err
	case <-c.writerDone:
		select {
		case err := <-r.done:
			return r.pos, err
		default:
			return 0, ErrClosed
		}
	}
}

// sendDirect writes data on the caller's goroutine when nothing is queued
// and nobody is writing; ok is false when the frame must be queued
// instead. It never waits: a busy writer means the queue, whose wait ctx
// bounds.
func (c *Conn) sendDirect(data []byte) (ok bool, pos uint64, err error) {
	if len(c.queue) > 0 || len(c.prio) > 0 {
		return false, 0, nil
	}
	select {
	case c.writing <- struct{}{}:
	default:
		return false, 0, nil
	}
	defer func() { <-c.writing }()
	select {
	case <-c.writerDone:
		return true, 0, ErrClosed
	default:
	}
	if len(c.queue) > 0 { // queued meanwhile: keep the order
		return false, 0, nil
	}
	pos, err = c.write(gws.OpcodeText, data)
	return true, pos, err
}

// SendPriority queues a small text frame (a pong) ahead of everything in the
// bulk queue, without blocking. It fails with ErrQueueFull when the lane is
// full and ErrClosed after the connection ended.
func (c *Conn) SendPriority(data []byte) error {
	return c.control(gws.OpcodeText, data)
}

func (c *Conn) control(op gws.Opcode, data []byte) error {
	select {
	case <-c.writerDone:
		return ErrClosed
	default:
	}
	select {
	case c.prio <- control{op: op, data: data}:
		return nil
	default:
		return ErrQueueFull
	}
}

// Close writes a close frame with code and reason (after frames already
// being written) and ends the connection, then waits for its goroutines.
// Frames still queued and not yet written are dropped: callers that need
// them delivered wait for their Send calls first.
func (c *Conn) Close(code uint16, reason string) error {
	var err error
	c.closeOnce.Do(func() {
		select {
		case <-c.readDone: // already ended: keep its reason
		default:
			c.localCode.Store(uint32(code))
		}
		close(c.closing)
		c.wmu.Lock()
		// Also cuts short a write stuck on a server that stopped reading.
		_ = c.socket.NetConn().SetWriteDeadline(time.Now().Add(c.cfg.CloseTimeout))
		c.wmu.Unlock()
		if len(reason) > closeReasonMaxSize {
			reason = reason[:closeReasonMaxSize]
		}
		err = c.socket.WriteClose(code, []byte(reason))
		_ = c.socket.NetConn().Close()
	})
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// RemoteAddr is the server's address (or the proxy's).
func (c *Conn) RemoteAddr() net.Addr { return c.socket.RemoteAddr() }

func (c *Conn) writeLoop() {
	defer c.finish()
	defer close(c.writerDone)
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	for {
		// Control frames first, so pongs never wait behind bulk frames.
		select {
		case f := <-c.prio:
			if _, err := c.writeHeld(f.op, f.data); err != nil {
				return
			}
			continue
		default:
		}
		select {
		case f := <-c.prio:
			if _, err := c.writeHeld(f.op, f.data); err != nil {
				return
			}
		case r := <-c.queue:
			var err error
			r.pos, err = c.writeHeld(gws.OpcodeText, r.data)
			r.done <- err
			if err != nil {
				return
			}
		case now := <-ping.C:
			c.checkPongs(now)
			if _, err := c.writeHeld(gws.OpcodePing, c.keepalivePing()); err != nil {
				return
			}
		case <-c.readDone:
			return
		case <-c.closing:
			return
		}
	}
}

// writeHeld writes one frame holding the writing token (waiting for a
// Send that writes directly).
func (c *Conn) writeHeld(op gws.Opcode, data []byte) (uint64, error) {
	c.writing <- struct{}{}
	defer func() { <-c.writing }()
	return c.write(op, data)
}

// write sends one frame with a write deadline; a data frame written gets
// its position (ack.go). Any write error closes the connection (gws does
// so itself).
func (c *Conn) write(op gws.Opcode, data []byte) (uint64, error) {
	c.wmu.Lock()
	select {
	case <-c.closing:
		c.wmu.Unlock()
		return 0, ErrClosed
	default:
	}
	_ = c.socket.NetConn().SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	c.wmu.Unlock()
	if c.peer != nil {
		c.peer.writer.Store(true)
	}
	err := c.socket.WriteMessage(op, data)
	if c.peer != nil {
		c.peer.writer.Store(false)
		if gone := c.peer.takeGone(); err == nil && gone != nil {
			// The server has reset the connection. gws was told the
			// write succeeded so that its read loop still reads what
			// the server sent before, up to its close frame; the
			// connection ends when the read loop does.
			c.wmu.Lock()
			if c.writeErr == nil {
				c.writeErr = gone
			}
			c.wmu.Unlock()
			return 0, gone
		}
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.wmu.Lock()
		if c.writeErr == nil {
			c.writeErr = err
		}
		c.wmu.Unlock()
		_ = c.socket.NetConn().Close()
	}
	if err != nil {
		return 0, writeError(err)
	}
	if op != gws.OpcodeText && op != gws.OpcodeBinary {
		return 0, nil
	}
	return c.wrote(), nil
}

// writeError is what a failed write returns to its caller, on whichever
// goroutine it wrote: a write deadline that passed is ErrWriteTimeout (the
// server stopped reading), as the connection's end will say too.
func writeError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%w)", ErrWriteTimeout, err)
	}
	return err
}

// peerConn is the agent's end of the socket, under gws (and TLS). A server
// closes its socket right after its close frame (gws servers do), so a
// frame the agent writes meanwhile fails with a reset or a broken pipe.
// gws would end the connection with that write error at once: the close
// frame already waiting in the socket would never be read, and its code
// lost (4001 token rotated, 4003 node deleted, 4000 replaced by another
// connection). So a failed write of the Conn's writer that finds the server
// gone is reported to gws as done and kept for the writer (takeGone): the
// writer fails the frame and stops, and the read loop reads on to the
// close frame, or to the reset, which follows the data at once.
type peerConn struct {
	net.Conn
	writer atomic.Bool // the Conn's writer is writing a frame

	mu   sync.Mutex
	gone error // a write error kept from gws
}

func (p *peerConn) Write(b []byte) (int, error) {
	n, err := p.Conn.Write(b)
	if err != nil && p.writer.Load() && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		p.mu.Lock()
		if p.gone == nil {
			p.gone = err
		}
		p.mu.Unlock()
		return len(b), nil
	}
	return n, err
}

// takeGone returns (and forgets) the write error kept from gws, if any.
func (p *peerConn) takeGone() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.gone
	p.gone = nil
	return err
}

// finish runs when the writer has stopped: it waits for the read loop,
// decides why the connection ended and closes done.
func (c *Conn) finish() {
	<-c.readDone
	// A Send writing on its own goroutine may have failed the connection:
	// wait for it to record why (writerDone is closed, so no other starts).
	c.writing <- struct{}{}
	c.wmu.Lock()
	writeErr := c.writeErr
	c.wmu.Unlock()
	<-c.writing
	c.err = classify(c.readErr, writeErr, uint16(c.localCode.Load()), c.cfg.MaxMessageBytes)
	if errors.Is(c.err, ErrMessageTooLarge) {
		c.log.Warn("server sent a frame over MAX_MESSAGE_BYTES; connection closed with 1009",
			"limitBytes", c.cfg.MaxMessageBytes)
	}
	close(c.done)
}

// touch pushes the read deadline out: anything received proves the
// connection alive.
func (c *Conn) touch(s *gws.Conn) {
	now := time.Now()
	c.ack.readAt.Store(now.UnixNano())
	_ = s.NetConn().SetReadDeadline(now.Add(c.cfg.ReadTimeout))
}

// handler receives gws's events on the read goroutine. It never blocks on
// agent work: frames are copied and handed to a channel.
type handler struct{ c *Conn }

func (h handler) OnOpen(s *gws.Conn)             { h.c.touch(s) }
func (h handler) OnClose(_ *gws.Conn, err error) { h.c.readErr = err }
func (h handler) OnPong(s *gws.Conn, p []byte) {
	h.c.touch(s)
	h.c.onPong(p)
}
func (h handler) OnPing(s *gws.Conn, p []byte) {
	h.c.touch(s)
	if err := h.c.control(gws.OpcodePong, bytes.Clone(p)); err != nil {
		h.c.log.Debug("pong not queued", "err", err)
	}
}

func (h handler) OnMessage(s *gws.Conn, m *gws.Message) {
	f := Frame{Data: bytes.Clone(m.Bytes()), Binary: m.Opcode == gws.OpcodeBinary}
	_ = m.Close()
	h.c.touch(s)
	select {
	case h.c.frames <- f:
	case <-h.c.closing:
		return
	}
	// The receiver may have made us wait: count from now.
	h.c.touch(s)
}
