package agent

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultLogStreamBuffer is the default LOG_STREAM_BUFFER: bytes of log lines
// one follow stream holds while the server reads slower than the container
// writes. All streams together hold at most logBudgetStreams times it.
const (
	DefaultLogStreamBuffer = 8 << 20
	logBudgetStreams       = 4
)

// Chunk sizes of a logBuffer: max/16, between these bounds.
const (
	minLogChunk = 4 << 10
	maxLogChunk = 64 << 10
)

// recordHeader is the size of a line's header in a chunk: stream index (1),
// read time in Unix nanoseconds (8), text length (4).
const recordHeader = 13

// logBudget bounds the bytes that all follow streams' buffers hold together,
// so a server that opens many streams on chatty containers cannot make the
// agent hold LOG_STREAM_BUFFER times maxStreams.
type logBudget struct {
	max  int64
	used atomic.Int64
}

// reserve takes n bytes if they fit; force takes them anyway (a stream's
// first chunk, so that every stream makes progress).
func (b *logBudget) reserve(n int, force bool) bool {
	for {
		used := b.used.Load()
		if !force && used+int64(n) > b.max {
			return false
		}
		if b.used.CompareAndSwap(used, used+int64(n)) {
			return true
		}
	}
}

func (b *logBudget) release(n int) { b.used.Add(-int64(n)) }

// logChunk holds whole records back to back; r is the read offset and n the
// records not read yet.
type logChunk struct {
	b    []byte
	r, n int
}

// logBuffer is the FIFO of one follow stream's lines between the engine
// reader (push, which never blocks) and the sender (next). It is bounded by
// bytes: when a new line does not fit, the oldest lines are dropped, a whole
// chunk at a time, and counted; the sender learns of them as a gap before
// the lines that follow them. Lines are stored in chunks, not one object
// each, so the bound is the memory it holds.
type logBuffer struct {
	budget *logBudget
	max    int // bytes of chunks this buffer may hold
	chunk  int // size of a regular chunk

	mu      sync.Mutex
	chunks  []*logChunk // oldest first
	spare   *logChunk   // a consumed chunk kept for reuse (counted in held)
	held    int         // bytes of chunks allocated, spare included
	lines   int         // lines held
	streams []string    // stream names by index
	closed  bool

	pushed int // lines ever pushed
	// gap counts lines dropped since the sender last took; gapStream and
	// gapAt describe the first of them.
	gap       int
	gapStream string
	gapAt     time.Time
	dropped   int // lines dropped because the buffer was full

	wake chan struct{} // capacity 1: something to take, or closed
}

func newLogBuffer(limit int, budget *logBudget) *logBuffer {
	return &logBuffer{
		budget: budget,
		max:    limit,
		chunk:  min(max(limit/16, minLogChunk), maxLogChunk),
		wake:   make(chan struct{}, 1),
	}
}

// push appends a line read at at, dropping the oldest lines when it does
// not fit. It never blocks on the sender. It reports false, keeping
// nothing, once the buffer is closed.
func (b *logBuffer) push(stream, text string, at time.Time) bool {
	need := recordHeader + len(text)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	b.pushed++
	var tail *logChunk
	if n := len(b.chunks); n > 0 {
		tail = b.chunks[n-1]
	}
	if tail == nil || cap(tail.b)-len(tail.b) < need {
		tail = b.grow(need)
	}
	si := b.streamIndex(stream)
	off := len(tail.b)
	tail.b = tail.b[:off+need]
	rec := tail.b[off:]
	rec[0] = si
	binary.LittleEndian.PutUint64(rec[1:9], uint64(at.UnixNano()))
	binary.LittleEndian.PutUint32(rec[9:13], uint32(len(text)))
	copy(rec[recordHeader:], text)
	tail.n++
	b.lines++
	b.mu.Unlock()
	b.signal()
	return true
}

// grow adds a chunk with room for need bytes, first dropping the oldest
// chunks until this buffer and the budget allow it. A buffer that holds
// nothing always gets its chunk.
func (b *logBuffer) grow(need int) *logChunk {
	size := max(b.chunk, need)
	if s := b.spare; s != nil && cap(s.b) >= size {
		b.spare = nil
		s.b, s.r, s.n = s.b[:0], 0, 0
		b.chunks = append(b.chunks, s)
		return s
	}
	b.freeSpare()
	for len(b.chunks) > 0 && (b.held+size > b.max || !b.budget.reserve(size, false)) {
		b.dropOldest()
	}
	if len(b.chunks) == 0 {
		b.budget.reserve(size, true)
	}
	b.held += size
	c := &logChunk{b: make([]byte, 0, size)}
	b.chunks = append(b.chunks, c)
	return c
}

// dropOldest drops the oldest chunk and counts its unread lines as a gap.
func (b *logBuffer) dropOldest() {
	c := b.chunks[0]
	if c.n > 0 {
		if b.gap == 0 {
			b.gapStream, b.gapAt, _ = b.record(c)
		}
		b.gap += c.n
		b.dropped += c.n
		b.lines -= c.n
	}
	b.chunks[0] = nil
	b.chunks = b.chunks[1:]
	b.release(c)
}

func (b *logBuffer) release(c *logChunk) {
	b.held -= cap(c.b)
	b.budget.release(cap(c.b))
}

func (b *logBuffer) freeSpare() {
	if b.spare != nil {
		b.release(b.spare)
		b.spare = nil
	}
}

// record decodes the next unread record of c without consuming it.
func (b *logBuffer) record(c *logChunk) (stream string, at time.Time, text []byte) {
	rec := c.b[c.r:]
	n := int(binary.LittleEndian.Uint32(rec[9:13]))
	return b.streams[rec[0]], time.Unix(0, int64(binary.LittleEndian.Uint64(rec[1:9]))), rec[recordHeader : recordHeader+n]
}

func (b *logBuffer) streamIndex(stream string) byte {
	for i, s := range b.streams {
		if s == stream {
			return byte(i)
		}
	}
	if len(b.streams) == 255 { // never with Docker's two streams
		return 254
	}
	b.streams = append(b.streams, stream)
	return byte(len(b.streams) - 1)
}

func (b *logBuffer) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// close ends the input: the sender takes what is left and then stops.
func (b *logBuffer) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.signal()
}

// logTake is what the sender takes next: a gap (lines dropped) or lines of
// one stream, oldest first.
type logTake struct {
	gap    int
	stream string
	at     time.Time // read time of the first line (of the gap's first line)
	lines  []string
	bytes  int
}

// batchLinger is how long the sender, woken by a line after the buffer ran
// empty, waits for more before it takes: a stream that trickles line by
// line then goes out in a few frames a second of many lines, not a frame,
// a JSON encoding and a write per line (which cost a flood a third of its
// speed).
const batchLinger = 2 * time.Millisecond

// next waits until there is something to send and takes it: a pending gap
// first, else up to maxLines lines of one stream totalling about maxBytes.
// It reports false when the buffer is closed and empty, or ctx ended.
func (b *logBuffer) next(ctx context.Context, maxLines, maxBytes int) (logTake, bool) {
	waited := false
	for {
		b.mu.Lock()
		if waited && !b.closed && b.gap == 0 && b.lines < maxLines {
			b.mu.Unlock()
			waited = false
			t := time.NewTimer(batchLinger)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return logTake{}, false
			}
			continue
		}
		if t, ok := b.take(maxLines, maxBytes); ok {
			b.mu.Unlock()
			return t, true
		}
		closed := b.closed
		b.mu.Unlock()
		if closed {
			return logTake{}, false
		}
		select {
		case <-b.wake:
			waited = true
		case <-ctx.Done():
			return logTake{}, false
		}
	}
}

func (b *logBuffer) take(maxLines, maxBytes int) (logTake, bool) {
	if b.gap > 0 {
		t := logTake{gap: b.gap, stream: b.gapStream, at: b.gapAt}
		b.gap = 0
		return t, true
	}
	if b.lines == 0 {
		return logTake{}, false
	}
	var t logTake
	for len(b.chunks) > 0 && len(t.lines) < maxLines && t.bytes < maxBytes {
		c := b.chunks[0]
		if c.n == 0 {
			if len(b.chunks) == 1 {
				break // the chunk being written
			}
			b.retire()
			continue
		}
		stream, at, text := b.record(c)
		if t.lines == nil {
			t.stream, t.at = stream, at
		} else if stream != t.stream {
			break
		}
		t.lines = append(t.lines, string(text))
		t.bytes += len(text)
		c.r += recordHeader + len(text)
		c.n--
		b.lines--
	}
	if c := b.chunks[0]; c.n == 0 && len(b.chunks) > 1 {
		b.retire()
	}
	return t, true
}

// retire removes the consumed oldest chunk, keeping it as the spare.
func (b *logBuffer) retire() {
	c := b.chunks[0]
	b.chunks[0] = nil
	b.chunks = b.chunks[1:]
	if b.spare == nil && cap(c.b) == b.chunk {
		b.spare = c
		return
	}
	b.release(c)
}

// discard drops what is left (the stream ended before the sender sent
// it) and returns how many lines that was.
func (b *logBuffer) discard() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.lines
	b.dropped += n
	b.lines = 0
	for _, c := range b.chunks {
		b.release(c)
	}
	b.chunks = nil
	b.freeSpare()
	b.closed = true
	return n
}

// counts returns the lines pushed so far and the lines dropped because the
// buffer was full or discarded.
func (b *logBuffer) counts() (pushed, dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pushed, b.dropped
}
