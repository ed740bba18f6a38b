package transport_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/testsupport"
	"github.com/lormas/lormas-agent/internal/transport"
)

// deafServer accepts one WebSocket upgrade and then never reads again,
// while it keeps sending a text frame every few milliseconds: a server
// that is alive (the agent's read deadline keeps moving) but has stopped
// reading, so the agent's writes meet a full socket.
func deafServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		_ = ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		resp, ok := upgradeResponse(t, c)
		if !ok {
			return
		}
		if _, err := c.Write([]byte(resp)); err != nil {
			t.Errorf("write the upgrade response: %v", err)
			return
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte{0x81, 2, '{', '}'}); err != nil {
				return // the agent gave the connection up
			}
		}
	}()
	return "ws://" + ln.Addr().String()
}

// TestWriteTimeoutOnCallersGoroutine: with the writer idle, Send writes on
// its caller's goroutine. When the server stops reading, that write's
// deadline passes: the caller gets ErrWriteTimeout, and the connection
// ends with ErrWriteTimeout, not as a keepalive failure (the server kept
// sending all along) nor as a bare "i/o timeout".
func TestWriteTimeoutOnCallersGoroutine(t *testing.T) {
	testsupport.CheckLeaks(t)
	cfg := config(t, deafServer(t), nil)
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.ReadTimeout = time.Minute
	cfg.PingInterval = time.Minute // the writer goroutine stays idle
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(transport.CloseNormal, "") })
	go func() {
		for range c.Frames() {
		}
	}()
	frame := bytes.Repeat([]byte("x"), 512<<10)
	var sendErr error
	for sent := 0; sendErr == nil; sent++ {
		if sent > 4096 { // 2 GiB into a server that reads nothing
			t.Fatal("every Send succeeded although the server reads nothing")
		}
		sendErr = c.Send(context.Background(), frame)
	}
	if !errors.Is(sendErr, transport.ErrWriteTimeout) {
		t.Errorf("Send failed with %v, want ErrWriteTimeout", sendErr)
	}
	if err := waitDone(t, c); !errors.Is(err, transport.ErrWriteTimeout) {
		t.Errorf("connection ended with %v, want ErrWriteTimeout", err)
	}
}
