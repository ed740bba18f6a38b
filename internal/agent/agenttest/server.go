package agenttest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// DefaultWait bounds Expect, ExpectResult and ExpectClose while the agent
// sends nothing: they fail once nothing has arrived for this long. While
// frames keep arriving (a long stream on a loaded machine is slow, not
// stuck) they wait on, up to MaxWait in all.
const DefaultWait = 10 * time.Second

// MaxWait bounds Expect, ExpectResult and ExpectClose in all.
const MaxWait = 2 * time.Minute

// ServerOptions configure a Server.
type ServerOptions struct {
	// Token is the node token accepted at the upgrade in "Authorization:
	// Bearer" (and, when the agent also sends it, as the token query
	// parameter). Empty accepts any non-empty token.
	Token string
	// TLS serves wss:// with this configuration (see CA.ServerTLS).
	TLS *tls.Config
	// MaxMessageBytes is the server's read limit (default 16 MiB).
	MaxMessageBytes int
}

// Server is an in-process Lormas server for agent tests: it checks the
// token before the upgrade (401 otherwise), records every upgrade request,
// every frame and every close it receives, and lets the test send frames,
// close or drop connections, refuse upgrades, answer or swallow pings and
// read slowly.
type Server struct {
	t   testing.TB
	hs  *httptest.Server
	up  *gws.Upgrader
	url string

	mu        sync.Mutex
	token     string
	refuse    int
	swallow   bool
	readDelay time.Duration
	delaySet  chan struct{} // closed when the read delay changes
	upgrades  []Upgrade
	conns     map[int]*gws.Conn
	cut       map[int]bool // connections cut by CutConns: nothing more is recorded from them
	connSeq   int
	received  []Received
	consumed  []bool
	closes    []Closed
	closeSeen int
	changed   chan struct{}

	stopped chan struct{}
	wg      sync.WaitGroup
}

// Upgrade records one upgrade request.
type Upgrade struct {
	Header http.Header
	Query  url.Values
	Status int // 101 when accepted
	Conn   int // connection number when accepted, else 0
}

// Received is one frame the server read.
type Received struct {
	Conn   int
	Type   string           // the message type, "" for undecodable frames
	Raw    []byte           // the frame as sent
	Msg    protocol.Message // decoded, or nil
	Err    error            // decoding error
	Binary bool
	At     time.Time
}

// Closed records the end of a connection as the server saw it.
type Closed struct {
	Conn   int
	Code   uint16 // close code from the agent's close frame, 0 without one
	Reason string
	Err    error
}

// NewServer starts a Server; it is closed when the test ends.
func NewServer(t testing.TB, opts ServerOptions) *Server {
	t.Helper()
	s := &Server{t: t, token: opts.Token, conns: map[int]*gws.Conn{}, cut: map[int]bool{}, changed: make(chan struct{}), delaySet: make(chan struct{}), stopped: make(chan struct{})}
	limit := opts.MaxMessageBytes
	if limit <= 0 {
		limit = 16 << 20
	}
	s.up = gws.NewUpgrader(serverHandler{s}, &gws.ServerOption{
		ReadMaxPayloadSize:  limit,
		WriteMaxPayloadSize: 64 << 20,
		Recovery:            gws.Recovery,
	})
	s.hs = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	if opts.TLS != nil {
		s.hs.TLS = opts.TLS
		s.hs.StartTLS()
		s.url = "wss://" + strings.TrimPrefix(s.hs.URL, "https://")
	} else {
		s.hs.Start()
		s.url = "ws://" + strings.TrimPrefix(s.hs.URL, "http://")
	}
	t.Cleanup(s.Close)
	return s
}

// URL is the server's base URL (ws:// or wss://) for SERVER_URL.
func (s *Server) URL() string { return s.url }

// HTTPURL is the server's base URL as http:// or https://.
func (s *Server) HTTPURL() string { return s.hs.URL }

// SetToken changes the accepted token (as after a rotation). Existing
// connections stay up.
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	s.token = token
	s.mu.Unlock()
}

// Refuse answers every following upgrade with status (0 accepts again).
func (s *Server) Refuse(status int) {
	s.mu.Lock()
	s.refuse = status
	s.mu.Unlock()
}

// SwallowPings makes the server neither answer the agent's WebSocket pings
// nor send anything itself, like a half-open connection.
func (s *Server) SwallowPings(on bool) {
	s.mu.Lock()
	s.swallow = on
	s.mu.Unlock()
}

// SetReadDelay makes the server sleep that long after reading each frame,
// so the agent meets TCP backpressure. A long delay stops reading; setting
// a new delay ends the current sleep.
func (s *Server) SetReadDelay(d time.Duration) {
	s.mu.Lock()
	s.readDelay = d
	close(s.delaySet)
	s.delaySet = make(chan struct{})
	s.mu.Unlock()
}

// Upgrades returns every upgrade request so far, accepted or refused.
func (s *Server) Upgrades() []Upgrade {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Upgrade(nil), s.upgrades...)
}

// Connections counts the upgrades accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connSeq
}

// Live counts the connections currently open.
func (s *Server) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitConnections waits until at least n upgrades have been accepted.
func (s *Server) WaitConnections(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return s.connSeq >= n }, fmt.Sprintf("%d connections", n))
}

// WaitUpgrades waits until at least n upgrade requests (accepted or not)
// have arrived.
func (s *Server) WaitUpgrades(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return len(s.upgrades) >= n }, fmt.Sprintf("%d upgrade requests", n))
}

// Send writes msg as a text frame to the newest open connection.
func (s *Server) Send(msg protocol.Message) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", msg.MessageType(), err)
	}
	return s.SendRaw(data)
}

// SendRaw writes data as a text frame to the newest open connection.
func (s *Server) SendRaw(data []byte) error { return s.write(gws.OpcodeText, data) }

// SendBinary writes data as a binary frame to the newest open connection.
func (s *Server) SendBinary(data []byte) error { return s.write(gws.OpcodeBinary, data) }

func (s *Server) write(op gws.Opcode, data []byte) error {
	c := s.newest()
	if c == nil {
		return errors.New("agenttest: no open connection")
	}
	return c.WriteMessage(op, data)
}

func (s *Server) newest() *gws.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := 0
	for n := range s.conns {
		best = max(best, n)
	}
	return s.conns[best]
}

// CloseConns sends a close frame with code and reason on every open
// connection and closes it.
func (s *Server) CloseConns(code uint16, reason string) {
	for _, c := range s.open() {
		_ = c.WriteClose(code, []byte(reason))
	}
}

// DropConns closes every open connection's socket without a close frame.
func (s *Server) DropConns() {
	for _, c := range s.open() {
		_ = c.NetConn().Close()
	}
}

// CutConns ends every open connection as a network cut does: whatever the
// server has not read yet is lost (a read loop stalled by SetReadDelay
// records nothing more from it when it resumes), and the socket is closed
// without a close frame.
func (s *Server) CutConns() {
	s.mu.Lock()
	for n := range s.conns {
		s.cut[n] = true
	}
	s.mu.Unlock()
	s.DropConns()
}

func (s *Server) open() []*gws.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*gws.Conn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Next returns the next received message of type typ ("" for any) that no
// earlier Next returned, waiting for it until ctx ends.
func (s *Server) Next(ctx context.Context, typ string) (protocol.Message, error) {
	r, err := s.NextFrame(ctx, typ)
	if err != nil {
		return nil, err
	}
	if r.Err != nil {
		return nil, fmt.Errorf("agenttest: frame %q: %w", r.Raw, r.Err)
	}
	return r.Msg, nil
}

// NextFrame is Next returning the whole record.
func (s *Server) NextFrame(ctx context.Context, typ string) (Received, error) {
	var out Received
	err := s.wait(ctx, func() bool {
		for i, r := range s.received {
			if !s.consumed[i] && (typ == "" || r.Type == typ) {
				s.consumed[i] = true
				out = r
				return true
			}
		}
		return false
	}, fmt.Sprintf("a %q message", typ))
	return out, err
}

// Expect is Next with DefaultWait (without progress) that fails the test
// on timeout. Call it
// from the test goroutine only.
func (s *Server) Expect(typ string) protocol.Message {
	s.t.Helper()
	ctx, cancel := s.stallContext()
	defer cancel()
	m, err := s.Next(ctx, typ)
	if err != nil {
		s.t.Fatalf("agenttest: %v", err)
	}
	return m
}

// ExpectResult waits for the command_result of commandID, skipping results
// of other commands (they stay available to Next).
func (s *Server) ExpectResult(commandID string) protocol.CommandResult {
	s.t.Helper()
	ctx, cancel := s.stallContext()
	defer cancel()
	var out protocol.CommandResult
	err := s.wait(ctx, func() bool {
		for i, r := range s.received {
			if res, ok := r.Msg.(protocol.CommandResult); ok && !s.consumed[i] && res.CommandID == commandID {
				s.consumed[i] = true
				out = res
				return true
			}
		}
		return false
	}, "command_result "+commandID)
	if err != nil {
		s.t.Fatalf("agenttest: %v", err)
	}
	return out
}

// Received returns every frame read so far, in order.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Count counts the received messages of type typ.
func (s *Server) Count(typ string) int {
	n := 0
	for _, r := range s.Received() {
		if r.Type == typ {
			n++
		}
	}
	return n
}

// NextClose returns the next connection end that no earlier NextClose
// returned, waiting until ctx ends.
func (s *Server) NextClose(ctx context.Context) (Closed, error) {
	var out Closed
	err := s.wait(ctx, func() bool {
		if s.closeSeen < len(s.closes) {
			out = s.closes[s.closeSeen]
			s.closeSeen++
			return true
		}
		return false
	}, "a connection to close")
	return out, err
}

// ExpectClose is NextClose with DefaultWait (without progress) that fails
// the test on timeout.
func (s *Server) ExpectClose() Closed {
	s.t.Helper()
	ctx, cancel := s.stallContext()
	defer cancel()
	c, err := s.NextClose(ctx)
	if err != nil {
		s.t.Fatalf("agenttest: %v", err)
	}
	return c
}

// Close closes every connection and the listener and waits for the
// connection goroutines. It is idempotent and runs at test cleanup.
func (s *Server) Close() {
	select {
	case <-s.stopped:
		return
	default:
	}
	close(s.stopped)
	s.DropConns()
	s.hs.Close()
	s.wg.Wait()
}

// stallContext ends when nothing has arrived for DefaultWait, or after
// MaxWait.
func (s *Server) stallContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), MaxWait,
		fmt.Errorf("still waiting after %s", MaxWait))
	stall, stalled := context.WithCancelCause(ctx)
	go func() {
		idle := time.NewTimer(DefaultWait)
		defer idle.Stop()
		for {
			s.mu.Lock()
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
				idle.Reset(DefaultWait)
			case <-idle.C:
				stalled(fmt.Errorf("nothing received for %s", DefaultWait))
				return
			case <-stall.Done():
				return
			}
		}
	}()
	return stall, func() {
		stalled(context.Canceled)
		cancel()
	}
}

// wait runs cond under the lock until it reports true or ctx ends.
func (s *Server) wait(ctx context.Context, cond func() bool, what string) error {
	for {
		s.mu.Lock()
		ok := cond()
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		}
	}
}

// notify wakes waiters; call with s.mu held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != endpoint.NodeSocketPath {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	rec := Upgrade{Header: r.Header.Clone(), Query: r.URL.Query()}
	status := s.refuse
	if status == 0 && !s.authorized(r) {
		status = http.StatusUnauthorized
	}
	if status != 0 {
		rec.Status = status
		s.upgrades = append(s.upgrades, rec)
		s.notify()
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"error":%q}`, http.StatusText(status))
		return
	}
	s.mu.Unlock()

	conn, err := s.up.Upgrade(w, r)
	if err != nil {
		return
	}
	s.mu.Lock()
	select {
	case <-s.stopped:
		s.mu.Unlock()
		_ = conn.NetConn().Close()
		return
	default:
	}
	s.connSeq++
	n := s.connSeq
	conn.Session().Store("n", n)
	s.conns[n] = conn
	rec.Status, rec.Conn = http.StatusSwitchingProtocols, n
	s.upgrades = append(s.upgrades, rec)
	s.notify()
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		conn.ReadLoop()
	}()
}

// authorized wants the token in "Authorization: Bearer"; a ?token= query
// parameter (sent unless NODE_TOKEN_IN_QUERY=false) must be the same token.
func (s *Server) authorized(r *http.Request) bool {
	h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || h == "" {
		return false
	}
	if q := r.URL.Query(); q.Has("token") && q.Get("token") != h {
		return false
	}
	return s.token == "" || h == s.token
}

func connNumber(c *gws.Conn) int {
	v, _ := c.Session().Load("n")
	n, _ := v.(int)
	return n
}

// serverHandler receives gws events for the Server's connections.
type serverHandler struct{ s *Server }

func (h serverHandler) OnOpen(*gws.Conn) {}

func (h serverHandler) OnClose(c *gws.Conn, err error) {
	s := h.s
	cl := Closed{Conn: connNumber(c), Err: err}
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		cl.Code, cl.Reason = ce.Code, string(ce.Reason)
	}
	s.mu.Lock()
	delete(s.conns, cl.Conn)
	s.closes = append(s.closes, cl)
	s.notify()
	s.mu.Unlock()
}

func (h serverHandler) OnPing(c *gws.Conn, payload []byte) {
	h.s.mu.Lock()
	swallow := h.s.swallow
	h.s.mu.Unlock()
	if !swallow {
		_ = c.WritePong(payload)
	}
}

func (h serverHandler) OnPong(*gws.Conn, []byte) {}

func (h serverHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	s := h.s
	raw := bytes.Clone(m.Bytes())
	binary := m.Opcode == gws.OpcodeBinary
	_ = m.Close()
	r := Received{Conn: connNumber(c), Raw: raw, Binary: binary, At: time.Now()}
	if !binary {
		r.Msg, r.Err = protocol.Decode(raw)
		if r.Msg != nil {
			r.Type = r.Msg.MessageType()
		}
	}
	s.mu.Lock()
	if s.cut[r.Conn] {
		s.mu.Unlock()
		return
	}
	s.received = append(s.received, r)
	s.consumed = append(s.consumed, false)
	delay, delaySet := s.readDelay, s.delaySet
	s.notify()
	s.mu.Unlock()
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-delaySet:
		case <-s.stopped:
		}
	}
}
