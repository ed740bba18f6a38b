package docker

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// maxLogsBytes caps the text of one logs result (it travels in one frame); the
// oldest lines are left out beyond it.
const maxLogsBytes = 8 << 20

// Logs returns the last p.Lines lines of the container's stdout and
// stderr, in the order Docker returns them, optionally since p.Since and
// with Docker's timestamps.
func (e *Engine) Logs(ctx context.Context, p protocol.LogsParams) ([]string, error) {
	if p.Lines < 0 { // Docker would read a negative tail as the whole log
		return nil, protocol.Errorf(protocol.CodeInvalid, "lines must not be negative, got %d", p.Lines)
	}
	n := p.Lines
	ctx, cancel := e.call(ctx, 0)
	defer cancel()
	var (
		c  container.InspectResponse
		rc io.ReadCloser
	)
	err := e.withContainer(ctx, "logs", p.ContainerID, func(target container.InspectResponse) (err error) {
		c = target
		rc, err = e.cli.ContainerLogs(ctx, c.ID, container.LogsOptions{
			ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(n), Since: dockerSince(p.Since), Timestamps: p.Timestamps,
		})
		if err != nil {
			return dockerError(err, "read logs of container %s", p.ContainerID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	ring := newLineRing(n, maxLogsBytes)
	var scratch []byte
	err = readLogs(rc, isTTY(c), p.Timestamps, func(_ string, stamp, text []byte) error {
		scratch = appendLine(scratch[:0], stamp, text)
		ring.add(string(scratch))
		return nil
	})
	if err != nil {
		return nil, dockerError(err, "read logs of container %s", p.ContainerID)
	}
	return ring.lines(), nil
}

// appendLine appends a line as the server receives it: Docker's timestamp
// and a space first when the line has one.
func appendLine(dst, stamp, text []byte) []byte {
	if stamp != nil {
		dst = append(append(dst, stamp...), ' ')
	}
	return append(dst, text...)
}

// isTTY reports whether the container has a terminal, whose log stream is
// raw instead of multiplexed.
func isTTY(c container.InspectResponse) bool { return c.Config != nil && c.Config.Tty }

// dockerSince renders a since time in Docker's form, seconds.nanoseconds;
// the zero time is "" (no since).
func dockerSince(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return unixNano(t)
}

// unixNano renders t as Docker's seconds.nanoseconds time filter.
func unixNano(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// lineRing keeps the last max lines whose text fits in maxBytes (at least
// the newest line).
type lineRing struct {
	buf      []string
	head     int // buf[head:] are the kept lines
	max      int
	bytes    int
	maxBytes int
}

func newLineRing(max, maxBytes int) *lineRing {
	return &lineRing{max: max, maxBytes: maxBytes}
}

func (r *lineRing) add(line string) {
	r.buf = append(r.buf, line)
	r.bytes += len(line)
	for n := len(r.buf) - r.head; n > r.max || r.bytes > r.maxBytes && n > 1; n-- {
		r.bytes -= len(r.buf[r.head])
		r.buf[r.head] = ""
		r.head++
	}
	if r.head > len(r.buf)/2 {
		r.buf = append(r.buf[:0], r.buf[r.head:]...)
		r.head = 0
	}
}

func (r *lineRing) lines() []string {
	return append([]string{}, r.buf[r.head:]...)
}
