package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

const (
	testAdminToken      = "test-admin-token-0123456789"
	testEnrollmentToken = "test-enrollment-token-0123456789"
	waitLimit           = 5 * time.Second // safety net for anything awaited
)

// harness is a Server behind an httptest.Server.
type harness struct {
	t      *testing.T
	srv    *Server
	url    string // http://host:port of the server
	client *http.Client
	dir    string
	logs   *testsupport.Buffer
}

// testEnv is the environment of a test server; extra overrides it.
func testEnv(dir string, extra map[string]string) map[string]string {
	env := map[string]string{
		"DATA_DIR":         dir,
		"ADMIN_TOKEN":      testAdminToken,
		"ENROLLMENT_TOKEN": testEnrollmentToken,
		// Every test client is 127.0.0.1: the failure budget is large
		// unless a test is about it (ratelimit_test.go).
		"AUTH_FAILURE_BURST": "100000",
	}
	maps.Copy(env, extra)
	for k, v := range env {
		if v == "" {
			delete(env, k)
		}
	}
	return env
}

func newHarness(t *testing.T, extra map[string]string) *harness {
	t.Helper()
	return startHarness(t, t.TempDir(), extra)
}

func startHarness(t *testing.T, dir string, extra map[string]string) *harness {
	t.Helper()
	cfg, err := LoadConfig(testEnv(dir, extra))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	logs := &testsupport.Buffer{}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	h := &harness{t: t, srv: srv, url: ts.URL, client: ts.Client(), dir: dir, logs: logs}
	// Cleanups run last-in first-out: the server closes its sessions and
	// streams first, then httptest waits for the remaining requests.
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("server Close: %v", err)
		}
	})
	return h
}

// request sends a request; token "" sends no Authorization header.
func (h *harness) request(method, path string, body any, token string) (*http.Response, []byte) {
	h.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		r = bytes.NewReader(mustMarshal(b))
	}
	req, err := http.NewRequest(method, h.url+path, r)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, data
}

// admin sends an admin request and checks the status.
func (h *harness) admin(method, path string, body any, wantStatus int) []byte {
	h.t.Helper()
	resp, data := h.request(method, path, body, testAdminToken)
	if resp.StatusCode != wantStatus {
		h.t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, data, wantStatus)
	}
	return data
}

func (h *harness) createNode(name string) createdNode {
	h.t.Helper()
	var n createdNode
	decode(h.t, h.admin("POST", "/api/nodes", map[string]string{"name": name, "description": "test node"}, http.StatusCreated), &n)
	return n
}

func (h *harness) node(id string) nodeView {
	h.t.Helper()
	var v nodeView
	decode(h.t, h.admin("GET", "/api/nodes/"+id, nil, http.StatusOK), &v)
	return v
}

func decode(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

// errorOf returns the "error" of a JSON error body, failing the test when
// the body is not one.
func errorOf(t *testing.T, data []byte) string {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", data)
	}
	return e.Error
}

// testAgent is a real gws client playing the node agent.
type testAgent struct {
	t        *testing.T
	conn     *gws.Conn
	frames   chan []byte // text frames received, pings excluded when autoPong
	pings    chan struct{}
	closed   chan struct{}
	closeErr error
	autoPong bool
}

func (a *testAgent) OnOpen(*gws.Conn)               {}
func (a *testAgent) OnPing(c *gws.Conn, p []byte)   { _ = c.WritePong(p) }
func (a *testAgent) OnPong(*gws.Conn, []byte)       {}
func (a *testAgent) OnClose(_ *gws.Conn, err error) { a.closeErr = err; close(a.closed) }
func (a *testAgent) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	frame := bytes.Clone(m.Bytes())
	if bytes.Contains(frame, []byte(`"type":"ping"`)) {
		select {
		case a.pings <- struct{}{}:
		default:
		}
		if a.autoPong {
			_ = c.WriteMessage(gws.OpcodeText, []byte(`{"type":"pong"}`))
			return
		}
	}
	select {
	case a.frames <- frame:
	default:
		a.t.Errorf("test agent: frame buffer full, dropped %s", frame)
	}
}

type dialOptions struct {
	header   bool // send the token as Authorization: Bearer
	query    bool // send the token as ?token=
	noPong   bool // do not answer application pings
	noRead   bool // never read from the connection: a stalled agent
	maxFrame int
}

func (h *harness) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(h.url, "http") + "/api/ws/nodes" + query
}

// dial connects a test agent; the error and response are those of the
// handshake.
func (h *harness) dial(token string, o dialOptions) (*testAgent, *http.Response, error) {
	if !o.header && !o.query {
		o.header, o.query = true, true
	}
	q := ""
	if o.query {
		q = "?token=" + token
	}
	hdr := http.Header{"User-Agent": {"Lormas-Node-Agent/test"}}
	if o.header {
		hdr.Set("Authorization", "Bearer "+token)
	}
	a := &testAgent{t: h.t, frames: make(chan []byte, 1024), pings: make(chan struct{}, 1),
		closed: make(chan struct{}), autoPong: !o.noPong}
	conn, resp, err := gws.NewClient(a, &gws.ClientOption{Addr: h.wsURL(q), RequestHeader: hdr,
		WriteMaxPayloadSize: max(o.maxFrame, 16<<20)})
	if err != nil {
		return nil, resp, err
	}
	a.conn = conn
	if o.noRead {
		h.t.Cleanup(func() { _ = conn.NetConn().Close() })
		return a, resp, nil
	}
	go conn.ReadLoop()
	h.t.Cleanup(func() {
		_ = conn.WriteClose(1000, nil)
		select {
		case <-a.closed:
		case <-time.After(waitLimit):
			h.t.Errorf("test agent did not close")
		}
	})
	return a, resp, nil
}

// connect dials with the token and waits until the server has attached
// the session for nodeID.
func (h *harness) connect(nodeID, token string) *testAgent {
	h.t.Helper()
	a, resp, err := h.dial(token, dialOptions{})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		h.t.Fatalf("dial: %v (status %d)", err, status)
	}
	testsupport.WaitFor(h.t, "session attached", func() bool {
		s := h.srv.hub.session(nodeID)
		return s != nil && s.conn.RemoteAddr().String() == a.conn.LocalAddr().String()
	})
	return a
}

func (a *testAgent) send(v any) {
	a.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		b = mustMarshal(v)
	}
	if err := a.conn.WriteMessage(gws.OpcodeText, b); err != nil {
		a.t.Fatalf("agent send: %v", err)
	}
}

// next returns the next frame, failing after waitLimit.
func (a *testAgent) next() []byte {
	a.t.Helper()
	select {
	case f := <-a.frames:
		return f
	case <-a.closed:
		a.t.Fatalf("connection closed while waiting for a frame: %v", a.closeErr)
	case <-time.After(waitLimit):
		a.t.Fatalf("no frame within %s", waitLimit)
	}
	return nil
}

// command returns the next frame as a command.
func (a *testAgent) command() protocol.Command {
	a.t.Helper()
	f := a.next()
	m, err := protocol.Decode(f)
	if err != nil {
		a.t.Fatalf("decode %s: %v", f, err)
	}
	c, ok := m.(protocol.Command)
	if !ok {
		a.t.Fatalf("got %s, want a command", f)
	}
	return c
}

// waitClosed waits for the server to close the connection and returns the
// close frame's code and reason.
func (a *testAgent) waitClosed() (uint16, string) {
	a.t.Helper()
	select {
	case <-a.closed:
	case <-time.After(waitLimit):
		a.t.Fatalf("connection not closed within %s", waitLimit)
	}
	var ce *gws.CloseError
	if !errors.As(a.closeErr, &ce) {
		return 0, a.closeErr.Error()
	}
	return ce.Code, string(ce.Reason)
}

// sseClient reads a Server-Sent Events stream.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	cancel func()
}

func (h *harness) stream(path string) *sseClient {
	h.t.Helper()
	req, err := http.NewRequest("GET", h.url+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	tr := &http.Transport{}
	client := &http.Client{Transport: tr}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h.t.Fatalf("GET %s = %d %s", path, resp.StatusCode, data)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		h.t.Fatalf("Content-Type = %q, want text/event-stream", ct)
	}
	c := &sseClient{t: h.t, resp: resp, events: make(chan sseEvent, 1024)}
	done := make(chan struct{})
	c.cancel = func() {
		resp.Body.Close()
		tr.CloseIdleConnections()
		<-done
	}
	go func() {
		defer close(done)
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = []byte(strings.TrimPrefix(line, "data: "))
			case line == "" && ev.name != "":
				c.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	h.t.Cleanup(c.cancel)
	return c
}

// next returns the next event other than skip, failing after waitLimit or
// when the stream ends.
func (c *sseClient) next(skip ...string) sseEvent {
	c.t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				c.t.Fatalf("event stream ended")
			}
			if contains(skip, ev.name) {
				continue
			}
			return ev
		case <-timeout:
			c.t.Fatalf("no event within %s", waitLimit)
		}
	}
}

// ended waits for the stream to end.
func (c *sseClient) ended() {
	c.t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case _, ok := <-c.events:
			if !ok {
				return
			}
		case <-timeout:
			c.t.Fatalf("event stream did not end within %s", waitLimit)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func jsonBody(s string) io.Reader { return strings.NewReader(s) }
