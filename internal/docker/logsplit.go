package docker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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

// readLogs reads a Docker log stream and calls emit for every line, in the
// order the lines complete in the stream. A TTY container's stream is raw
// stdout; any other is multiplexed in frames of [stream, 0, 0, 0, size(4)]
// followed by size bytes, which are not aligned to lines. Lines come without
// their line ending, without "\r", and a final line without a newline is
// emitted at the end of the stream; no empty trailing line is produced.
func readLogs(r io.Reader, tty, timestamps bool, emit func(stream, line string) error) error {
	out := &lineSplitter{stream: StreamStdout, timestamps: timestamps, emit: emit}
	if tty {
		if _, err := io.Copy(out, r); err != nil {
			return err
		}
		return out.flush()
	}
	errOut := &lineSplitter{stream: StreamStderr, timestamps: timestamps, emit: emit}
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("log stream ended inside a frame header")
			}
			return err
		}
		size := int64(binary.BigEndian.Uint32(hdr[4:]))
		var w io.Writer
		switch hdr[0] {
		case 0, 1: // stdin (never written by Docker), stdout
			w = out
		case 2:
			w = errOut
		case 3: // the daemon's own error
			msg, _ := io.ReadAll(io.LimitReader(r, min(size, 4096)))
			return fmt.Errorf("log stream error from the daemon: %s", bytes.TrimSpace(msg))
		default:
			return fmt.Errorf("log stream: unknown stream %d in frame header; is the container a TTY container?", hdr[0])
		}
		n, err := io.Copy(w, io.LimitReader(r, size))
		if err != nil {
			return err
		}
		if n < size {
			return fmt.Errorf("log stream ended inside a frame")
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
	emit       func(stream, line string) error
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
				if err := s.emit(s.stream, cleanLine(s.buf, s.timestamps)+truncatedMark); err != nil {
					return 0, err
				}
				s.buf, s.skipping = s.buf[:0], true
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
		if err := s.emit(s.stream, cleanLine(s.buf, s.timestamps)); err != nil {
			return 0, err
		}
		s.buf = s.buf[:0]
	}
	return n, nil
}

// flush emits a last line that had no newline.
func (s *lineSplitter) flush() error {
	if len(s.buf) == 0 || s.skipping {
		return nil
	}
	line := cleanLine(s.buf, s.timestamps)
	s.buf = s.buf[:0]
	if line == "" {
		return nil
	}
	return s.emit(s.stream, line)
}

// cleanLine removes carriage returns as a terminal would show the line: a
// "\r" at the end (a TTY's "\r\n") is dropped, and text before another "\r"
// was overwritten by the text after it (progress bars). A timestamp prefix
// that Docker added is kept.
func cleanLine(b []byte, timestamps bool) string {
	var ts []byte
	if timestamps {
		if i := bytes.IndexByte(b, ' '); i >= 0 {
			ts, b = b[:i+1], b[i+1:]
		}
	}
	b = bytes.TrimRight(b, "\r")
	if i := bytes.LastIndexByte(b, '\r'); i >= 0 {
		b = b[i+1:]
	}
	return string(ts) + string(b)
}
