package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
)

// TestClassifyWriteErrorSeenOnlyByReadLoop: gws hands a failed write's
// error to OnClose, so the read loop may report a write deadline before
// (or without) the writer recording it. It is a write timeout, not a
// keepalive failure; a read deadline stays a keepalive failure.
func TestClassifyWriteErrorSeenOnlyByReadLoop(t *testing.T) {
	opErr := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Err: err}
	}
	for _, tc := range []struct {
		name              string
		readErr, writeErr error
		want              error
	}{
		{"write deadline, recorded", opErr("read", os.ErrDeadlineExceeded), opErr("write", os.ErrDeadlineExceeded), ErrWriteTimeout},
		{"write deadline, only in OnClose", opErr("write", os.ErrDeadlineExceeded), nil, ErrWriteTimeout},
		{"write deadline under TLS, only in OnClose", fmt.Errorf("tls: %w", opErr("write", os.ErrDeadlineExceeded)), nil, ErrWriteTimeout},
		{"read deadline", opErr("read", os.ErrDeadlineExceeded), nil, ErrKeepalive},
	} {
		if got := classify(tc.readErr, tc.writeErr, 0, 1<<20); !errors.Is(got, tc.want) {
			t.Errorf("%s: classify = %v, want %v", tc.name, got, tc.want)
		}
	}
}
