package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
	"github.com/lormas/lormas-agent/internal/transport"
)

const token = "eyJhbGciOiJIUzI1NiJ9.eyJub2RlSWQiOiJub2RlLTEifQ.c2lnbmF0dXJlLXNlY3JldA"

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func config(t *testing.T, serverURL string, logs *logBuffer) transport.Config {
	t.Helper()
	u, err := endpoint.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	var w interface{ Write([]byte) (int, error) } = &logBuffer{}
	if logs != nil {
		w = logs
	}
	return transport.Config{
		Server:       u,
		Token:        token,
		Version:      "1.2.3",
		Proxy:        transport.Direct,
		PingInterval: 100 * time.Millisecond,
		ReadTimeout:  400 * time.Millisecond,
		WriteTimeout: 2 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// dial connects and waits until the server has registered the connection.
func dial(t *testing.T, s *agenttest.Server, cfg transport.Config) *transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := s.Connections()
	c, err := transport.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if err := s.WaitConnections(ctx, n+1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(transport.CloseNormal, "") })
	go func() { // drain, as the agent does
		for range c.Frames() {
		}
	}()
	return c
}

func waitDone(t *testing.T, c *transport.Conn) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end")
		return nil
	}
}

func TestDialSendsTokenAndHeaders(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	c := dial(t, s, config(t, s.URL()+"/", nil))
	if err := c.Send(context.Background(), []byte(`{"type":"pong"}`)); err != nil {
		t.Fatalf("send: %v", err)
	}
	s.Expect(protocol.TypePong)

	ups := s.Upgrades()
	if len(ups) != 1 {
		t.Fatalf("got %d upgrades, want 1", len(ups))
	}
	u := ups[0]
	if got := u.Query.Get("token"); got != token {
		t.Errorf("token query = %q, want the node token", got)
	}
	if got, want := u.Header.Get("Authorization"), "Bearer "+token; got != want {
		t.Errorf("Authorization = %q, want %q", got, want)
	}
	if got, want := u.Header.Get("User-Agent"), "Lormas-Node-Agent/1.2.3"; got != want {
		t.Errorf("User-Agent = %q, want %q", got, want)
	}
}

func TestDialAuthAndUpgradeErrors(t *testing.T) {
	testsupport.CheckLeaks(t)
	tests := []struct {
		name     string
		status   int
		badToken bool
		wantAuth bool
	}{
		{"wrong token gets 401", 0, true, true},
		{"403", http.StatusForbidden, false, true},
		{"503 is not auth", http.StatusServiceUnavailable, false, false},
		{"404 is not auth", http.StatusNotFound, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
			if tc.badToken {
				s.SetToken("another-token")
			}
			s.Refuse(tc.status)
			_, err := transport.Dial(context.Background(), config(t, s.URL(), nil))
			if err == nil {
				t.Fatal("dial succeeded, want an error")
			}
			if got := errors.Is(err, transport.ErrAuth); got != tc.wantAuth {
				t.Errorf("errors.Is(err, ErrAuth) = %v, want %v (err: %v)", got, tc.wantAuth, err)
			}
			var ae *transport.AuthError
			var ue *transport.UpgradeError
			switch {
			case errors.As(err, &ae):
				if ae.Status == 0 {
					t.Errorf("AuthError without HTTP status: %v", err)
				}
			case errors.As(err, &ue):
				if ue.Status != tc.status {
					t.Errorf("UpgradeError status %d, want %d", ue.Status, tc.status)
				}
				// The error names the URL dialled (a 404 is usually a wrong SERVER_URL).
				if !strings.Contains(err.Error(), "/api/ws/nodes?token=REDACTED") {
					t.Errorf("error %q does not name the URL dialled", err)
				}
			default:
				t.Errorf("error %T %v is neither AuthError nor UpgradeError", err, err)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error contains the token: %v", err)
			}
		})
	}
}

func TestCloseCodes(t *testing.T) {
	testsupport.CheckLeaks(t)
	tests := []struct {
		code     uint16
		wantAuth bool
	}{
		{4001, true}, {4003, true}, {1008, true}, {1000, false}, {1011, false}, {4000, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			s := agenttest.NewServer(t, agenttest.ServerOptions{})
			c := dial(t, s, config(t, s.URL(), nil))
			s.CloseConns(tc.code, "because")
			err := waitDone(t, c)
			if got := errors.Is(err, transport.ErrAuth); got != tc.wantAuth {
				t.Fatalf("errors.Is(%v, ErrAuth) = %v, want %v", err, got, tc.wantAuth)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tc.code)) || !strings.Contains(err.Error(), "because") {
				t.Errorf("error %q does not name code %d and the reason", err, tc.code)
			}
			if !tc.wantAuth {
				var ce *transport.CloseError
				if !errors.As(err, &ce) || ce.Code != tc.code || ce.Local {
					t.Errorf("got %#v, want a remote CloseError with code %d", err, tc.code)
				}
			}
		})
	}
}

func TestFramesInOrderAndBinaryFlag(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, config(t, s.URL(), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(transport.CloseNormal, "")
	if err := s.WaitConnections(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := s.SendRaw([]byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SendBinary([]byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	var got []Frame
	for len(got) < 51 {
		select {
		case f := <-c.Frames():
			got = append(got, Frame(f))
		case <-ctx.Done():
			t.Fatalf("got %d frames, want 51", len(got))
		}
	}
	for i := 0; i < 50; i++ {
		if want := fmt.Sprintf(`{"n":%d}`, i); string(got[i].Data) != want || got[i].Binary {
			t.Fatalf("frame %d = %q binary=%v, want %q text", i, got[i].Data, got[i].Binary, want)
		}
	}
	if !got[50].Binary || !bytes.Equal(got[50].Data, []byte{0, 1, 2}) {
		t.Errorf("last frame = %v binary=%v, want binary 00 01 02", got[50].Data, got[50].Binary)
	}
}

// Frame mirrors transport.Frame for comparisons.
type Frame transport.Frame

func TestOversizeFrameClosesWith1009(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	logs := &logBuffer{}
	cfg := config(t, s.URL(), logs)
	cfg.MaxMessageBytes = 1024
	c := dial(t, s, cfg)
	if err := s.SendRaw([]byte(`{"type":"ping","pad":"` + strings.Repeat("x", 2048) + `"}`)); err != nil {
		t.Fatal(err)
	}
	err := waitDone(t, c)
	if !errors.Is(err, transport.ErrMessageTooLarge) {
		t.Fatalf("connection ended with %v, want ErrMessageTooLarge", err)
	}
	if cl := s.ExpectClose(); cl.Code != transport.CloseTooLarge {
		t.Errorf("server saw close code %d, want 1009", cl.Code)
	}
	if !strings.Contains(logs.String(), "1009") {
		t.Errorf("the 1009 close was not logged; logs:\n%s", logs)
	}
}

func TestSendOverLimitKeepsConnection(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.MaxMessageBytes = 1024
	c := dial(t, s, cfg)
	err := c.Send(context.Background(), bytes.Repeat([]byte("x"), 2000))
	if !errors.Is(err, transport.ErrFrameTooLarge) {
		t.Fatalf("Send of 2000 bytes = %v, want ErrFrameTooLarge", err)
	}
	if err := c.Send(context.Background(), []byte(`{"type":"pong"}`)); err != nil {
		t.Fatalf("Send after a refused frame: %v", err)
	}
	s.Expect(protocol.TypePong)
}

func TestKeepaliveDetectsSilentServer(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	s.SwallowPings(true)
	c := dial(t, s, config(t, s.URL(), nil))
	if err := waitDone(t, c); !errors.Is(err, transport.ErrKeepalive) {
		t.Fatalf("connection ended with %v, want ErrKeepalive", err)
	}
}

func TestKeepaliveKeepsAnsweringServer(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.PingInterval = 50 * time.Millisecond
	cfg.ReadTimeout = time.Second
	c := dial(t, s, cfg)
	// Several read timeouts with no data frames: pongs alone keep it alive.
	select {
	case <-c.Done():
		t.Fatalf("connection to a server answering pings ended: %v", c.Err())
	case <-time.After(2500 * time.Millisecond):
	}
}

func TestCloseSendsCodeAndReason(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	c := dial(t, s, config(t, s.URL(), nil))
	if err := c.Close(transport.CloseGoingAway, "agent shutting down"); err != nil {
		t.Fatalf("close: %v", err)
	}
	cl := s.ExpectClose()
	if cl.Code != transport.CloseGoingAway || cl.Reason != "agent shutting down" {
		t.Errorf("server saw close %d %q, want 1001 %q", cl.Code, cl.Reason, "agent shutting down")
	}
	var ce *transport.CloseError
	if err := c.Err(); !errors.As(err, &ce) || !ce.Local || ce.Code != 1001 {
		t.Errorf("Err() = %v, want a local CloseError 1001", err)
	}
	if err := c.Send(context.Background(), []byte("{}")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestBackpressureBlocksSendAndLosesNothing(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.SendQueue = 2
	cfg.WriteTimeout = time.Minute
	cfg.ReadTimeout = time.Minute
	c := dial(t, s, cfg)
	s.SetReadDelay(time.Hour) // reads one frame, then stalls

	const total = 80 // 20 MiB: far above socket buffers
	pad := strings.Repeat("x", 256<<10)
	var mu sync.Mutex
	sent := 0
	done := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			data := []byte(fmt.Sprintf(`{"type":"log","commandId":"%d","line":"%s"}`, i, pad))
			if err := c.Send(context.Background(), data); err != nil {
				done <- err
				return
			}
			mu.Lock()
			sent++
			mu.Unlock()
		}
		done <- nil
	}()
	// Wait until the producer has been stuck for a while.
	last, still := -1, 0
	for still < 5 {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		n := sent
		mu.Unlock()
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
		if n == total {
			t.Fatalf("all %d frames were accepted by a server that stopped reading", total)
		}
	}
	t.Logf("Send blocked after %d frames of 256 KiB", last)

	s.SetReadDelay(0)
	if err := <-done; err != nil {
		t.Fatalf("send after the server resumed reading: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < total; i++ {
		m, err := s.Next(ctx, protocol.TypeLog)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got := m.(protocol.LogMessage).CommandID; got != fmt.Sprint(i) {
			t.Fatalf("frame %d carries id %s: order broken", i, got)
		}
	}
}

func TestPriorityLaneOvertakesBulkQueue(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.ReadTimeout = time.Minute
	cfg.WriteTimeout = time.Minute
	c := dial(t, s, cfg)
	s.SetReadDelay(time.Hour)
	const bulk = 60
	pad := strings.Repeat("x", 256<<10) // 15 MiB in total: far more than socket buffers hold
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < bulk; i++ {
			data := []byte(fmt.Sprintf(`{"type":"log","commandId":"%d","line":"%s"}`, i, pad))
			go func() {
				if err := c.Send(context.Background(), data); err != nil {
					t.Errorf("bulk send: %v", err)
				}
			}()
		}
	}()
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // let the writer fill the socket and block
	if err := c.SendPriority([]byte(`{"type":"pong"}`)); err != nil {
		t.Fatalf("SendPriority: %v", err)
	}
	s.SetReadDelay(0)
	pos, lastBulk := -1, -1
	for i := 0; i < bulk+1; i++ {
		// 15 MiB of JSON take the test server a while to decode under the
		// race detector on a loaded machine: each frame, not the whole
		// stream, gets the safety net.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r, err := s.NextFrame(ctx, "")
		cancel()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		switch r.Type {
		case protocol.TypePong:
			pos = i
		case protocol.TypeLog:
			lastBulk = i
		}
	}
	if pos < 0 || pos > lastBulk {
		t.Fatalf("pong at position %d, last bulk frame at %d: the pong waited behind the bulk queue", pos, lastBulk)
	}
	t.Logf("pong arrived as frame %d of %d", pos, bulk+1)
}

func TestWriteTimeoutWhenServerStopsReading(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.ReadTimeout = time.Minute
	cfg.PingInterval = time.Minute
	c := dial(t, s, cfg)
	s.SetReadDelay(time.Hour)
	frame := bytes.Repeat([]byte("x"), 512<<10)
	go func() {
		for {
			if c.Send(context.Background(), frame) != nil {
				return
			}
		}
	}()
	if err := waitDone(t, c); !errors.Is(err, transport.ErrWriteTimeout) {
		t.Fatalf("connection ended with %v, want ErrWriteTimeout", err)
	}
}

func TestDialCancelledDuringHandshake(t *testing.T) {
	testsupport.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept() // accept, never answer the upgrade
		if err == nil {
			accepted <- c
		}
	}()
	cfg := config(t, "ws://"+ln.Addr().String(), nil)
	cfg.HandshakeTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		c := <-accepted
		defer c.Close()
		cancel()
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := transport.Dial(ctx, cfg)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Dial = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial ignored its context during the handshake")
	}
}

func TestDialErrorHidesToken(t *testing.T) {
	testsupport.CheckLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = transport.Dial(context.Background(), config(t, "ws://"+addr, nil))
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("dial error contains the token: %v", err)
	}
}

// TestConcurrentSendsKeepEachSendersOrder: Send writes on the caller's
// goroutine when the writer is idle and queues otherwise; with many
// senders at once every frame arrives whole, once, and each sender's
// frames in the order it sent them.
func TestConcurrentSendsKeepEachSendersOrder(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.ReadTimeout = time.Minute
	c := dial(t, s, cfg)
	const senders, each = 8, 100
	var wg sync.WaitGroup
	for g := 0; g < senders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				data := []byte(fmt.Sprintf(`{"type":"log","commandId":"%d-%d","line":"%s"}`, g, i, strings.Repeat("x", i*37)))
				if err := c.Send(context.Background(), data); err != nil {
					t.Errorf("sender %d frame %d: %v", g, i, err)
					return
				}
			}
		}()
		if g == senders/2 {
			_ = c.SendPriority([]byte(`{"type":"pong"}`)) // the writer goroutine writes meanwhile
		}
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	next := make([]int, senders)
	for n := 0; n < senders*each; n++ {
		m, err := s.Next(ctx, protocol.TypeLog)
		if err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		var g, i int
		if _, err := fmt.Sscanf(m.(protocol.LogMessage).CommandID, "%d-%d", &g, &i); err != nil {
			t.Fatal(err)
		}
		if i != next[g] {
			t.Fatalf("sender %d: frame %d arrived when %d was due", g, i, next[g])
		}
		if line := m.(protocol.LogMessage).Line; len(line) != i*37 {
			t.Fatalf("sender %d frame %d: line of %d bytes, want %d", g, i, len(line), i*37)
		}
		next[g]++
	}
}
