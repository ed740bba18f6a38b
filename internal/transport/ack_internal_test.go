package transport

import (
	"encoding/binary"
	"testing"
)

// TestPongMustEchoOurPing: only a pong echoing a ping of this connection
// (its nonce, a position it carried) moves Acked; an unsolicited or forged
// pong, or one claiming more than was pinged, proves nothing.
func TestPongMustEchoOurPing(t *testing.T) {
	c := newConn(Config{MaxMessageBytes: 1 << 20}.withDefaults())
	for range 3 {
		c.wrote()
	}
	ping := c.keepalivePing() // carries position 3
	forged := func(nonce []byte, pos uint64) []byte {
		p := make([]byte, ackPayloadSize)
		copy(p, nonce)
		binary.BigEndian.PutUint64(p[8:], pos)
		return p
	}
	for name, p := range map[string][]byte{
		"empty":         nil,
		"short":         ping[:8],
		"other nonce":   forged([]byte("01234567"), 3),
		"beyond pinged": forged(ping[:8], 1<<40),
	} {
		c.onPong(p)
		if got := c.Acked(); got != 0 {
			t.Fatalf("%s pong moved Acked to %d", name, got)
		}
	}
	c.onPong(forged(ping[:8], 2)) // an earlier ping's echo
	if got := c.Acked(); got != 2 {
		t.Fatalf("Acked %d, want 2", got)
	}
	c.onPong(ping)
	if got := c.Acked(); got != 3 {
		t.Fatalf("Acked %d, want 3", got)
	}
	c.onPong(forged(ping[:8], 1)) // never backwards
	if got := c.Acked(); got != 3 {
		t.Fatalf("Acked went back to %d", got)
	}
}
