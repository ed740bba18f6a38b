package transport_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/testsupport"
	"github.com/lormas/lormas-agent/internal/transport"
)

// waitAcked waits until c.Acked() reaches pos, or the connection ends.
func waitAcked(t *testing.T, c *transport.Conn, pos uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for c.Acked() < pos {
		select {
		case <-c.AckNotify():
		case <-c.Done():
			t.Fatalf("connection ended (%v) with %d of %d frames acknowledged", c.Err(), c.Acked(), pos)
		case <-deadline:
			t.Fatalf("%d of %d frames acknowledged", c.Acked(), pos)
		}
	}
}

// TestAckConfirmsWhatTheServerRead: the positions of data frames count up,
// and RequestAck's ping makes Acked reach the last one.
func TestAckConfirmsWhatTheServerRead(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.PingInterval = time.Hour // only requested pings
	cfg.ReadTimeout = time.Hour
	c := dial(t, s, cfg)
	for i := 1; i <= 5; i++ {
		pos, err := c.SendTracked(context.Background(), []byte(fmt.Sprintf(`{"type":"pong","n":%d}`, i)))
		if err != nil || pos != uint64(i) {
			t.Fatalf("frame %d: position %d, %v", i, pos, err)
		}
		c.RequestAck()
	}
	waitAcked(t, c, 5)
	if got := s.Count("pong"); got != 5 {
		t.Errorf("server read %d frames, want 5", got)
	}
	if c.Written() != 5 {
		t.Errorf("Written %d, want 5", c.Written())
	}
}

// TestAckNotPastWhatTheServerRead: a server that stops reading confirms
// nothing written after; the keepalive ends the connection with those
// frames unconfirmed.
func TestAckNotPastWhatTheServerRead(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	c := dial(t, s, cfg)
	if _, err := c.SendTracked(context.Background(), []byte(`{"type":"pong"}`)); err != nil {
		t.Fatal(err)
	}
	c.RequestAck()
	waitAcked(t, c, 1)
	s.SetReadDelay(time.Hour) // reads the next frame, then nothing
	for range 10 {
		if _, err := c.SendTracked(context.Background(), []byte(`{"type":"pong"}`)); err != nil {
			t.Fatal(err)
		}
		c.RequestAck()
	}
	if err := waitDone(t, c); err == nil {
		t.Fatal("connection ended without an error")
	}
	s.SetReadDelay(0)
	if got := c.Acked(); got > 2 {
		t.Errorf("Acked %d after the server stopped reading at frame 2; written %d", got, c.Written())
	}
}

// TestAckFallsBackForServerWithoutPongs: a server that sends frames but
// answers no ping would leave everything unconfirmed; after ReadTimeout the
// Conn says so and counts frames as acknowledged when written.
func TestAckFallsBackForServerWithoutPongs(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	s.SwallowPings(true)
	logs := &logBuffer{}
	cfg := config(t, s.URL(), logs)
	cfg.PingInterval = 50 * time.Millisecond
	cfg.ReadTimeout = 300 * time.Millisecond
	c := dial(t, s, cfg)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the server keeps the connection alive with data frames
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = s.SendRaw([]byte(`{"type":"ping"}`))
			case <-stop:
				return
			}
		}
	}()
	pos, err := c.SendTracked(context.Background(), []byte(`{"type":"pong"}`))
	if err != nil {
		t.Fatal(err)
	}
	c.RequestAck()
	waitAcked(t, c, pos)
	if !strings.Contains(logs.String(), "answers no WebSocket pings") {
		t.Errorf("the fallback was not logged: %s", logs.String())
	}
	pos, err = c.SendTracked(context.Background(), []byte(`{"type":"pong"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Acked() != pos {
		t.Errorf("after the fallback Acked %d, want the frame just written (%d)", c.Acked(), pos)
	}
}
