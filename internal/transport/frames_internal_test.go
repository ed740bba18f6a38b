package transport

import "testing"

// TestFramesQueueBoundedByBytes: the frames read ahead of the agent hold at
// most framesQueueBytes of the largest frames (or one frame), whatever
// MAX_MESSAGE_BYTES is.
func TestFramesQueueBoundedByBytes(t *testing.T) {
	for _, tc := range []struct{ maxMessage, want int }{
		{1 << 10, 64},
		{64 << 10, 64},
		{1 << 20, 8},
		{4 << 20, 2},
		{256 << 20, 1},
	} {
		n := framesQueue(tc.maxMessage)
		if n != tc.want {
			t.Errorf("framesQueue(%d) = %d, want %d", tc.maxMessage, n, tc.want)
		}
		if n > 1 && n*tc.maxMessage > framesQueueBytes {
			t.Errorf("framesQueue(%d) = %d frames: %d bytes read ahead, over %d", tc.maxMessage, n, n*tc.maxMessage, framesQueueBytes)
		}
	}
	c := newConn(Config{MaxMessageBytes: 1 << 20})
	if cap(c.frames) != 8 {
		t.Errorf("frames channel capacity %d with 1 MiB frames, want 8", cap(c.frames))
	}
}
