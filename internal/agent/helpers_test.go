package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// nodeToken signs a node JWT as lormas-server does (HS256, nodeId, sub,
// name, iat, jti).
func nodeToken(t testing.TB, nodeID, jti string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"nodeId": nodeID, "sub": nodeID, "name": "node-a", "iat": time.Now().Unix(), "jti": jti,
	}).SignedString([]byte("test-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// logBuffer collects the agent's JSON logs.
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

// entries returns the log records whose msg is msg.
func (b *logBuffer) entries(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// harness runs one Agent against one test Server.
type harness struct {
	t      *testing.T
	srv    *agenttest.Server
	rt     *agenttest.Runtime
	logs   *logBuffer
	agent  *agent.Agent
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	token  string
	secret []string // must never appear in logs
}

type setup struct {
	srvOpts agenttest.ServerOptions
	opts    func(*agent.Options)
	timing  agent.Timing
	noStart bool
}

// start creates a server and an agent with short intervals and runs it.
// Leak checking and the "token never logged" check run at cleanup.
func start(t *testing.T, rt *agenttest.Runtime, cfg setup) *harness {
	t.Helper()
	testsupport.CheckLeaks(t)
	if rt == nil {
		rt = &agenttest.Runtime{}
	}
	h := &harness{t: t, rt: rt, logs: &logBuffer{}, done: make(chan error, 1)}
	h.token = nodeToken(t, "node-123", "first")
	if cfg.srvOpts.Token == "" {
		cfg.srvOpts.Token = h.token
	}
	h.secret = append(h.secret, h.token, cfg.srvOpts.Token)
	h.srv = agenttest.NewServer(t, cfg.srvOpts)

	opts := agent.Options{
		ServerURL:             h.srv.URL(),
		Token:                 h.getToken,
		NodeName:              "node-a",
		Version:               "9.9.9",
		HeartbeatInterval:     time.Hour,
		ReconnectDelay:        10 * time.Millisecond,
		ReconnectMaxDelay:     100 * time.Millisecond,
		MaxConcurrentCommands: 8,
		ShutdownTimeout:       5 * time.Second,
		StatusEvents:          true,
		Runtime:               rt,
		Host:                  agenttest.Sampler{},
		Logger:                slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if cfg.opts != nil {
		cfg.opts(&opts)
	}
	a, err := agent.New(opts)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	tm := cfg.timing
	if tm.PingInterval == 0 {
		tm.PingInterval = 200 * time.Millisecond
	}
	if tm.ReadTimeout == 0 {
		tm.ReadTimeout = 3 * time.Second
	}
	if tm.FlushTimeout == 0 {
		tm.FlushTimeout = 2 * time.Second
	}
	agent.SetTiming(a, tm)
	h.agent = a

	t.Cleanup(func() {
		h.stop()
		logs := h.logs.String()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, s := range h.secret {
			if s != "" && strings.Contains(logs, s) {
				t.Errorf("a token appears in the agent's logs")
			}
		}
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	})
	if !cfg.noStart {
		h.run()
	}
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.agent.Run(ctx) }()
}

func (h *harness) getToken() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.token, nil
}

// setToken changes what the Token func returns (a rotated token file).
func (h *harness) setToken(tok string) {
	h.mu.Lock()
	h.token = tok
	h.secret = append(h.secret, tok)
	h.mu.Unlock()
}

// stop cancels Run and returns its error; it is idempotent.
func (h *harness) stop() error {
	h.t.Helper()
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(20 * time.Second):
		h.t.Fatal("Run did not return after cancel")
		return nil
	}
}

// wait waits for Run to return on its own.
func (h *harness) wait() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(20 * time.Second):
		h.t.Fatal("Run did not return")
		return nil
	}
}

// identified waits for the next agent_identify.
func (h *harness) identified() protocol.AgentIdentify {
	h.t.Helper()
	return h.srv.Expect(protocol.TypeAgentIdentify).(protocol.AgentIdentify)
}

// send sends a message to the agent.
func (h *harness) send(m protocol.Message) {
	h.t.Helper()
	if err := h.srv.Send(m); err != nil {
		h.t.Fatalf("send %s: %v", m.MessageType(), err)
	}
}

func (h *harness) sendRaw(s string) {
	h.t.Helper()
	if err := h.srv.SendRaw([]byte(s)); err != nil {
		h.t.Fatalf("send raw: %v", err)
	}
}

// ctx returns a context bounded by agenttest.DefaultWait.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), agenttest.DefaultWait)
	t.Cleanup(cancel)
	return ctx
}

func intp(n int) *int { return &n }

// resultOf decodes a result's generic "result" object into v.
func resultOf(t *testing.T, r protocol.CommandResult, v any) {
	t.Helper()
	data, err := json.Marshal(r.Result)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("result %s: %v", data, err)
	}
}
