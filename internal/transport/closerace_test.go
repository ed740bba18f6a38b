package transport_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/testsupport"
	"github.com/lormas/lormas-agent/internal/transport"
)

// abruptServer accepts one WebSocket upgrade, sends frames text frames and
// a close frame with code and reason, and resets the connection at once, as
// a server does that closes its socket right after its close frame while
// the agent's frames wait unread in it. closed is closed after the reset.
// With tlsCfg the connection is wss.
func abruptServer(t *testing.T, tlsCfg *tls.Config, frames int, code uint16, reason string) (url string, closed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		tcp, err := ln.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer tcp.Close()
		var c net.Conn = tcp
		if tlsCfg != nil {
			c = tls.Server(tcp, tlsCfg)
		}
		resp, ok := upgradeResponse(t, c)
		if !ok {
			return
		}
		var out []byte
		out = append(out, resp...)
		for range frames {
			out = append(out, 0x81, 2, '{', '}') // text frame "{}"
		}
		payload := binary.BigEndian.AppendUint16(nil, code)
		payload = append(payload, reason...)
		out = append(out, 0x88, byte(len(payload)))
		out = append(out, payload...)
		if _, err := c.Write(out); err != nil {
			t.Errorf("write: %v", err)
			return
		}
		_ = tcp.(*net.TCPConn).SetLinger(0) // close with a reset, no TLS close_notify
	}()
	scheme := "ws://"
	if tlsCfg != nil {
		scheme = "wss://"
	}
	return scheme + ln.Addr().String(), done
}

// upgradeResponse reads a WebSocket upgrade request from c and returns
// the 101 answer that accepts it (not yet written).
func upgradeResponse(t *testing.T, c net.Conn) (string, bool) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		t.Errorf("read the upgrade request: %v", err)
		return "", false
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n", true
}

// TestServerCloseCodeSurvivesFailedWrite: the server sends close 4001 and
// resets the connection while the agent is still writing. The agent's next
// write fails with a reset before its read loop has reached the close
// frame (here: the read loop waits for the receiver to take the frames
// before it). The connection must still end with the server's code, not
// with the write error: the code tells the agent its token was rotated
// (4001), its node deleted (4003) or its session replaced (4000).
func TestServerCloseCodeSurvivesFailedWrite(t *testing.T) {
	testsupport.CheckLeaks(t)
	ca := agenttest.NewCA(t, "close-race-ca")
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "ws", true: "wss"}[secure], func(t *testing.T) {
			var srvTLS *tls.Config
			if secure {
				srvTLS = ca.ServerTLS(t, nil)
			}
			url, closed := abruptServer(t, srvTLS, 12, 4001, "token rotated")
			cfg := config(t, url, nil)
			cfg.ReadTimeout, cfg.PingInterval = time.Minute, time.Minute
			cfg.MaxMessageBytes = 1 << 20 // the read loop holds 8 frames for the receiver, then waits
			if secure {
				cfg.TLS = &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := transport.Dial(ctx, cfg)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			t.Cleanup(func() { _ = c.Close(transport.CloseNormal, "") })
			<-closed
			// Nothing drains the frames yet: the read loop is stuck before
			// the close frame. Write until a write finds the reset.
			var sendErr error
			for i := 0; i < 100 && sendErr == nil; i++ {
				sendErr = c.Send(ctx, []byte(`{"type":"pong"}`))
			}
			if sendErr == nil {
				t.Fatal("every write succeeded on a reset connection")
			}
			go func() {
				for range c.Frames() {
				}
			}()
			err = waitDone(t, c)
			var ae *transport.AuthError
			if !errors.As(err, &ae) || ae.CloseCode != 4001 || ae.Reason != "token rotated" {
				t.Fatalf("connection ended with %v (after the write error %v), want the server's close 4001 token rotated", err, sendErr)
			}
		})
	}
}
