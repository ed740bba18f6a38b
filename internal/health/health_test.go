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

	"github.com/lormas/lormas-agent/internal/protocol"
	"regexp"
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

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"connected", m.connected.value(), 1},
		{"reconnects", m.reconnects.value(), 2},
		{"create success", m.commands.with("create", "success").value(), 1},
		{"create error", m.commands.with("create", "error").value(), 1},
		{"unknown action", m.commands.with("unknown", "error").value(), 1},
		{"outbox", m.outboxDepth.value(), 7},
		{"log lines", m.logLines.value(), 42},
		{"runtime errors start", m.runtimeErrors.with("start").value(), 1},
		{"runtime errors unknown", m.runtimeErrors.with("unknown").value(), 1},
		{"refused container bytes", m.refused.with("container_bytes").value(), 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	m.Connected(false)
	if v := m.connected.value(); v != 0 {
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
		`lormas_agent_build_info{commit="abc123",goversion="` + runtime.Version() + `",version="1.2.3"} 1`,
		`go_goroutines `,
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

// sampleLine is a sample of the Prometheus text format: name, optional
// labels (quoted values with \\, \" and \n escapes), a value.
var sampleLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (\+Inf|-Inf|NaN|[-+]?[0-9.]+(e[-+]?[0-9]+)?)$`)

// TestMetricsExposition checks the whole /metrics body against the text
// format: HELP and TYPE before each family's samples, every sample line
// well formed, label values escaped, histogram buckets cumulative up to
// +Inf = _count.
func TestMetricsExposition(t *testing.T) {
	m := NewMetrics("1.2.3 \"quoted\" \\ back", "c\nnewline")
	for _, d := range []time.Duration{time.Millisecond, 30 * time.Millisecond, 2 * time.Second, 10 * time.Minute} {
		m.CommandDone(protocol.ActionLogs, protocol.StatusSuccess, d)
	}
	srv := httptest.NewServer(NewServer(Options{Metrics: m}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	raw, _ := io.ReadAll(resp.Body)
	body := string(raw)
	typed := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "# HELP "):
		case strings.HasPrefix(l, "# TYPE "):
			f := strings.Fields(l)
			if len(f) != 4 {
				t.Fatalf("TYPE line %q", l)
			}
			if _, dup := typed[f[2]]; dup {
				t.Errorf("family %s declared twice", f[2])
			}
			typed[f[2]] = f[3]
		default:
			if !sampleLine.MatchString(l) {
				t.Errorf("malformed sample line %q", l)
				continue
			}
			name := l[:strings.IndexAny(l, "{ ")]
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if typed[name] == "" && typed[base] == "" {
				t.Errorf("sample %s before its TYPE", name)
			}
		}
	}
	for _, want := range []string{
		`lormas_agent_build_info{commit="c\nnewline",goversion="` + runtime.Version() + `",version="1.2.3 \"quoted\" \\ back"} 1`,
		`lormas_agent_command_duration_seconds_bucket{action="logs",le="0.005"} 1`,
		`lormas_agent_command_duration_seconds_bucket{action="logs",le="0.05"} 2`,
		`lormas_agent_command_duration_seconds_bucket{action="logs",le="300"} 3`,
		`lormas_agent_command_duration_seconds_bucket{action="logs",le="+Inf"} 4`,
		`lormas_agent_command_duration_seconds_count{action="logs"} 4`,
		`lormas_agent_command_duration_seconds_sum{action="logs"} 602.031`,
		`# TYPE lormas_agent_command_duration_seconds histogram`,
		`# TYPE lormas_agent_commands_total counter`,
		`# TYPE lormas_agent_connected gauge`,
		"go_memstats_alloc_bytes ", "go_gc_duration_seconds_count ", "process_cpu_seconds_total ", "process_open_fds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
