package agent_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// BenchmarkLogsCommand measures one logs command (10 lines) from the
// server's write of the frame to its read of the result, through the real
// WebSocket, session, dispatcher and outbox, with a runtime that answers
// at once: the agent's own cost per command. The server is a minimal gws
// endpoint that only matches results (not agenttest.Server, which decodes
// and records every frame), so allocs/op is mostly the agent's.
func BenchmarkLogsCommand(b *testing.B) {
	lines := make([]string, 10)
	for i := range lines {
		lines[i] = "2026-11-30T06:00:00.000000000Z line " + strconv.Itoa(i) + " of the benchmark container's output"
	}
	rt := &agenttest.Runtime{
		LogsFunc: func(context.Context, protocol.LogsParams) ([]string, error) { return lines, nil },
	}
	srv := newBenchServer(b)
	log, err := logging.New(io.Discard, "info", "text")
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(agent.Options{
		ServerURL:         srv.url,
		Token:             func() (string, error) { return "bench-token", nil },
		NodeName:          "bench",
		NodeID:            "bench-node",
		Version:           "bench",
		HeartbeatInterval: 1 << 40,
		Runtime:           rt,
		Host:              agenttest.Sampler{},
		Logger:            log,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-srv.identified

	// Command ids must differ (the agent answers a repeated id from its
	// dedup table); the frame is built in a reused buffer.
	var frame []byte
	run := func(i int) {
		id := "c" + strconv.Itoa(i)
		frame = append(append(append(frame[:0], `{"type":"command","id":"`...), id...), `","action":"logs","containerId":"bench-logs","lines":10}`...)
		if err := srv.command(id, frame); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 100 { // warm-up: connection buffers, encoder caches
		run(i)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	n := 0
	for i := 100; b.Loop(); i++ {
		run(i)
		n++
	}
	// CPU time (agent and server together, the process's) per command
	// varies less with the machine's load than ns/op.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchServer is a minimal node endpoint for benchmarks: it accepts any
// token, answers pings (gws does) and hands each command_result to the
// command waiting for it.
type benchServer struct {
	url        string
	conn       atomic.Pointer[gws.Conn]
	identified chan struct{}
	once       sync.Once

	mu      sync.Mutex
	waiting map[string]chan struct{}
}

func newBenchServer(tb testing.TB) *benchServer {
	s := &benchServer{identified: make(chan struct{}), waiting: map[string]chan struct{}{}}
	up := gws.NewUpgrader(s, &gws.ServerOption{Recovery: gws.Recovery})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		s.conn.Store(c)
		go c.ReadLoop()
	}))
	tb.Cleanup(func() {
		if c := s.conn.Load(); c != nil {
			_ = c.NetConn().Close()
		}
		hs.Close()
	})
	s.url = "ws" + strings.TrimPrefix(hs.URL, "http")
	return s
}

func (s *benchServer) OnOpen(*gws.Conn)             {}
func (s *benchServer) OnClose(*gws.Conn, error)     {}
func (s *benchServer) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (s *benchServer) OnPong(*gws.Conn, []byte)     {}

func (s *benchServer) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	if bytes.Contains(b, []byte(`"type":"command_result"`)) {
		const key = `"commandId":"`
		i := bytes.Index(b, []byte(key))
		if i < 0 {
			return
		}
		rest := b[i+len(key):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			return
		}
		s.mu.Lock()
		ch := s.waiting[string(rest[:j])]
		s.mu.Unlock()
		if ch != nil {
			close(ch)
		}
		return
	}
	if bytes.Contains(b, []byte(`"type":"agent_identify"`)) {
		s.once.Do(func() { close(s.identified) })
	}
}

// command writes frame and waits for the result of command id.
func (s *benchServer) command(id string, frame []byte) error {
	ch := make(chan struct{})
	s.mu.Lock()
	s.waiting[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
	}()
	if err := s.conn.Load().WriteMessage(gws.OpcodeText, frame); err != nil {
		return err
	}
	<-ch
	return nil
}
