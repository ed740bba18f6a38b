package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProbes(t *testing.T) {
	var alive, ready atomic.Pointer[error]
	check := func(p *atomic.Pointer[error]) func() error {
		return func() error {
			if e := p.Load(); e != nil {
				return *e
			}
			return nil
		}
	}
	srv := httptest.NewServer(NewServer(Options{Alive: check(&alive), Ready: check(&ready)}).Handler())
	defer srv.Close()

	notReady := errors.New("not connected to the server")
	ready.Store(&notReady)
	for _, c := range []struct {
		path   string
		status int
		body   string
	}{
		{PathAlive, 200, "ok\n"},
		{PathReady, 503, "not ok: not connected to the server\n"},
		{PathMetrics, 404, ""},
	} {
		code, body := get(t, srv.URL+c.path)
		if code != c.status || (c.body != "" && body != c.body) {
			t.Errorf("GET %s = %d %q, want %d %q", c.path, code, body, c.status, c.body)
		}
	}
	ready.Store(nil)
	if code, _ := get(t, srv.URL+PathReady); code != 200 {
		t.Errorf("ready after recovery: %d", code)
	}
	dead := errors.New("heartbeat loop stopped")
	alive.Store(&dead)
	if code, body := get(t, srv.URL+PathAlive); code != 503 || !strings.Contains(body, "heartbeat loop stopped") {
		t.Errorf("alive when dead: %d %q", code, body)
	}
	resp, err := http.Post(srv.URL+PathAlive, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s = %d, want 405", PathAlive, resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	m := NewMetrics("1.2.3", "abc123")
	srv := httptest.NewServer(NewServer(Options{Metrics: m}).Handler())
	defer srv.Close()

	m.Connected(true)
	m.Reconnect()
	m.Reconnect()
	m.CommandDone(protocol.ActionCreate, protocol.StatusSuccess, 1500*time.Millisecond)
	m.CommandDone(protocol.ActionCreate, protocol.StatusError, 20*time.Millisecond)
	m.CommandDone(protocol.ActionStop, protocol.StatusSuccess, 3*time.Second)
	m.CommandDone("rm -rf", protocol.StatusError, time.Millisecond)
	m.OutboxDepth(7)
	m.LogLinesStreamed(40)
	m.LogLinesStreamed(2)
	m.RuntimeError(protocol.ActionStart)
	m.RuntimeError("bogus")
	m.CommandRefused("container_bytes")
	m.CommandRefused("container_bytes")
	m.CommandIDsForgotten("expired", 5)
	m.ResultsEvicted(3)
	m.RepeatedCommand("conflict")
	m.ResultsResent(4)
	m.ResultsDropped(1)
	m.ContainerEventsRelayed(9)
	m.ContainerEventsDropped("queue_full", 2)
	m.InventorySent("events_missed")

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"connected", testutil.ToFloat64(m.connected), 1},
		{"reconnects", testutil.ToFloat64(m.reconnects), 2},
		{"create success", testutil.ToFloat64(m.commands.WithLabelValues("create", "success")), 1},
		{"create error", testutil.ToFloat64(m.commands.WithLabelValues("create", "error")), 1},
		{"unknown action", testutil.ToFloat64(m.commands.WithLabelValues("unknown", "error")), 1},
		{"outbox", testutil.ToFloat64(m.outboxDepth), 7},
		{"log lines", testutil.ToFloat64(m.logLines), 42},
		{"runtime errors start", testutil.ToFloat64(m.runtimeErrors.WithLabelValues("start")), 1},
		{"runtime errors unknown", testutil.ToFloat64(m.runtimeErrors.WithLabelValues("unknown")), 1},
		{"refused container bytes", testutil.ToFloat64(m.refused.WithLabelValues("container_bytes")), 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	m.Connected(false)
	if v := testutil.ToFloat64(m.connected); v != 0 {
		t.Errorf("connected after Connected(false) = %v", v)
	}

	code, body := get(t, srv.URL+PathMetrics)
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`lormas_agent_connected 0`,
		`lormas_agent_reconnects_total 2`,
		`lormas_agent_commands_total{action="create",status="success"} 1`,
		`lormas_agent_commands_total{action="inspect",status="success"} 0`,
		`lormas_agent_command_duration_seconds_bucket{action="create",le="2.5"} 2`,
		`lormas_agent_command_duration_seconds_bucket{action="create",le="1"} 1`,
		`lormas_agent_command_duration_seconds_count{action="stop"} 1`,
		`lormas_agent_outbox_depth 7`,
		`lormas_agent_log_lines_streamed_total 42`,
		`lormas_agent_runtime_errors_total{action="start"} 1`,
		`lormas_agent_commands_refused_total{reason="container_bytes"} 2`,
		`lormas_agent_commands_refused_total{reason="node_bytes"} 0`,
		`lormas_agent_commands_refused_total{reason="container_commands"} 0`,
		`lormas_agent_command_ids_forgotten_total{reason="expired"} 5`,
		`lormas_agent_command_ids_forgotten_total{reason="limit"} 0`,
		`lormas_agent_results_evicted_total 3`,
		`lormas_agent_repeated_commands_total{answer="conflict"} 1`,
		`lormas_agent_repeated_commands_total{answer="stored"} 0`,
		`lormas_agent_results_resent_total 4`,
		`lormas_agent_results_dropped_total 1`,
		`lormas_agent_container_events_relayed_total 9`,
		`lormas_agent_container_events_dropped_total{reason="queue_full"} 2`,
		`lormas_agent_container_events_dropped_total{reason="disconnected"} 0`,
		`lormas_agent_inventories_sent_total{reason="events_missed"} 1`,
		`lormas_agent_inventories_sent_total{reason="identify"} 0`,
		`lormas_agent_build_info{commit="abc123",goversion="` + runtime.Version() + `",version="1.2.3"} 1`,
		`go_goroutines `,
		`go_gc_heap_live_bytes `,
		`go_gc_gogc_percent `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "rm -rf") || strings.Contains(body, "bogus") {
		t.Error("an unknown action became a label value")
	}
}

func TestServeShutsDownWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(Options{}).Serve(ctx, ln) }()

	addr := ln.Addr().String()
	if err := Check(context.Background(), addr); err != nil {
		t.Fatalf("Check while serving: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if err := Check(context.Background(), addr); err == nil {
		t.Error("Check succeeded after shutdown")
	}
}

func TestServeReportsListenerFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := NewServer(Options{}).Serve(context.Background(), ln); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}

func TestCheck(t *testing.T) {
	var healthy atomic.Bool
	srv := httptest.NewServer(NewServer(Options{Alive: func() error {
		if healthy.Load() {
			return nil
		}
		return errors.New("docker events loop stopped")
	}}).Handler())
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))

	healthy.Store(true)
	for _, addr := range []string{":" + port, "0.0.0.0:" + port, "127.0.0.1:" + port} {
		if err := Check(context.Background(), addr); err != nil {
			t.Errorf("Check(%q) = %v", addr, err)
		}
	}
	healthy.Store(false)
	err := Check(context.Background(), ":"+port)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "docker events loop stopped") {
		t.Errorf("Check of an unhealthy agent = %v", err)
	}
	if err := Check(context.Background(), ""); !errors.Is(err, ErrDisabled) {
		t.Errorf("Check(\"\") = %v, want ErrDisabled", err)
	}
	if err := Check(context.Background(), "nonsense"); err == nil {
		t.Error("Check(nonsense) = nil")
	}
}

func TestProbeAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9321":          "127.0.0.1:9321",
		"0.0.0.0:9321":   "127.0.0.1:9321",
		"[::]:9321":      "[::1]:9321",
		"127.0.0.1:9321": "127.0.0.1:9321",
		"10.0.0.5:9100":  "10.0.0.5:9100",
		"localhost:9321": "localhost:9321",
	} {
		if got, err := ProbeAddr(in); err != nil || got != want {
			t.Errorf("ProbeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
