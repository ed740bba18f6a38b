package docker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Stream names of log lines.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// maxLineBytes caps one log line; the rest of a longer line is dropped and the
// line is marked with truncatedMark.
const maxLineBytes = 64 << 10

const truncatedMark = " [truncated]"

// Docker's log timestamps (Timestamps: true) are RFC3339NanoFixed in UTC,
// always stampLen bytes, followed by a space. Docker's logging copier cuts a
// line longer than partialBytes into messages of partialBytes, and each
// message gets a timestamp of its own: a long line arrives as
// "stamp part1stamp part2...".
const (
	stampLayout  = "2006-01-02T15:04:05.000000000Z07:00"
	stampLen     = len("2006-01-02T15:04:05.000000000Z")
	partialBytes = 16 << 10
)

// readBufferBytes is the read buffer in front of the engine's stream, so a
// stream of small frames (one per line) costs few read calls.
const readBufferBytes = 64 << 10

// readers holds read buffers between streams: a logs command of ten lines
// allocated a buffer of 64 KiB every time, most of its garbage.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferBytes) }}

// lineFunc receives one line of a log stream. stamp is Docker's timestamp of
// the line when the stream carries them (else nil) and text the line without
// its ending, "\r" handled as a terminal would; both are only valid during
// the call.
type lineFunc func(stream string, stamp, text []byte) error

// readLogs reads a Docker log stream and calls emit for every line, in the
// order the lines complete in the stream. A TTY container's stream is raw
// stdout; any other is multiplexed in frames of [stream, 0, 0, 0, size(4)]
// followed by size bytes, which are not aligned to lines. A final line
// without a newline is emitted at the end of the stream; no empty trailing
// line is produced. With timestamps, each line's leading timestamp is split
// off into stamp, and the timestamps Docker put inside a long line (one per
// partial message) are removed.
func readLogs(r io.Reader, tty, timestamps bool, emit lineFunc) error {
	out := &lineSplitter{stream: StreamStdout, timestamps: timestamps, emit: emit}
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil) // keep no reference to the stream
		readers.Put(br)
	}()
	if tty {
		if _, err := br.WriteTo(out); err != nil {
			return err
		}
		return out.flush()
	}
	errOut := &lineSplitter{stream: StreamStderr, timestamps: timestamps, emit: emit}
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("log stream ended inside a frame header")
			}
			return err
		}
		size := int(binary.BigEndian.Uint32(hdr[4:]))
		var w *lineSplitter
		switch hdr[0] {
		case 0, 1: // stdin (never written by Docker), stdout
			w = out
		case 2:
			w = errOut
		case 3: // the daemon's own error
			msg, _ := io.ReadAll(io.LimitReader(br, int64(min(size, 4096))))
			return fmt.Errorf("log stream error from the daemon: %s", bytes.TrimSpace(msg))
		default:
			return fmt.Errorf("log stream: unknown stream %d in frame header; is the container a TTY container?", hdr[0])
		}
		// Hand the frame over in pieces that the reader already holds: no
		// copy of the frame of its own, and no allocation per frame.
		for size > 0 {
			p, err := br.Peek(min(size, br.Size()))
			if len(p) == 0 && err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("log stream ended inside a frame")
				}
				return err
			}
			if _, err := w.Write(p); err != nil {
				return err
			}
			_, _ = br.Discard(len(p))
			size -= len(p)
		}
	}
	if err := out.flush(); err != nil {
		return err
	}
	return errOut.flush()
}

// lineSplitter is an io.Writer that cuts its input into lines for emit.
type lineSplitter struct {
	stream     string
	timestamps bool
	emit       lineFunc
	buf        []byte
	skipping   bool // the current line was truncated: drop bytes up to its end
}

func (s *lineSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !s.skipping {
			room := maxLineBytes - len(s.buf)
			if len(chunk) > room {
				s.buf = append(s.buf, chunk[:room]...)
				if err := s.send(true); err != nil {
					return 0, err
				}
				s.buf, s.skipping = s.buf[:0], true
			} else if i >= 0 && len(s.buf) == 0 && len(chunk) <= partialBytes {
				// The whole line is in p and too short to hold partial
				// timestamps (which sendLine removes in place): no copy.
				if err := s.sendLine(chunk, false, false); err != nil {
					return 0, err
				}
				p = p[i+1:]
				continue
			} else {
				s.buf = append(s.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		p = p[i+1:]
		if s.skipping {
			s.skipping = false
			continue
		}
		if err := s.send(false); err != nil {
			return 0, err
		}
		s.buf = s.buf[:0]
	}
	return n, nil
}

func (s *lineSplitter) send(truncated bool) error { return s.sendLine(s.buf, truncated, false) }

// sendLine splits off the timestamp, cleans the line and emits it; a final
// line (no newline at the end of the stream) is left out when it is empty.
// A line longer than partialBytes is modified in place.
func (s *lineSplitter) sendLine(line []byte, truncated, final bool) error {
	var stamp []byte
	if s.timestamps {
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			stamp, line = line[:i], line[i+1:]
			if len(stamp) == stampLen {
				line = stripPartialStamps(line)
			}
		} else {
			// A timestamp alone: Docker's stamp for an empty line.
			stamp, line = line, line[len(line):]
		}
	}
	line = cleanLine(line)
	if final && len(line) == 0 {
		return nil
	}
	if truncated {
		return s.emit(s.stream, stamp, append(line, truncatedMark...))
	}
	return s.emit(s.stream, stamp, line)
}

// flush emits a last line that had no newline.
func (s *lineSplitter) flush() error {
	if len(s.buf) == 0 || s.skipping {
		return nil
	}
	line := s.buf
	s.buf = s.buf[:0]
	return s.sendLine(line, false, true)
}

// stripPartialStamps removes the timestamps Docker inserted into a long line
// where its logging copier cut it into partial messages: after every
// partialBytes bytes of text.
func stripPartialStamps(line []byte) []byte {
	for i := partialBytes; i+stampLen < len(line); i += partialBytes {
		if line[i+stampLen] != ' ' || !isStamp(line[i:i+stampLen]) {
			break
		}
		line = append(line[:i], line[i+stampLen+1:]...)
	}
	return line
}

// isStamp reports whether b has the shape of Docker's timestamp,
// 2006-01-02T15:04:05.000000000Z.
func isStamp(b []byte) bool {
	const shape = "0000-00-00T00:00:00.000000000Z"
	if len(b) != len(shape) {
		return false
	}
	for i := range len(shape) {
		if shape[i] == '0' {
			if b[i] < '0' || b[i] > '9' {
				return false
			}
		} else if b[i] != shape[i] {
			return false
		}
	}
	return true
}

// cleanLine removes carriage returns as a terminal would show the line: a
// "\r" at the end (a TTY's "\r\n") is dropped, and text before another "\r"
// was overwritten by the text after it (progress bars).
func cleanLine(b []byte) []byte {
	b = bytes.TrimRight(b, "\r")
	if i := bytes.LastIndexByte(b, '\r'); i >= 0 {
		b = b[i+1:]
	}
	return b
}
