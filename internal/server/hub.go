package server

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// WebSocket close codes the server sends. 4001 and 4003 are the codes an
// agent treats as "token refused" (docs/protocol.md): it re-reads its token file and
// retries with backoff.
const (
	closeGoingAway     = 1001 // server shutting down
	closeInternalError = 1011 // the server failed to check the session
	closeReplaced      = 4000 // a newer connection of the same node took over
	closeTokenRotated  = 4001 // the session's token is no longer current
	closeNodeDeleted   = 4003 // the node was deleted
	closeReasonRotated = "token rotated"
	// closeReasonExpired goes with closeTokenRotated (4001) when the
	// session's token expires: agents treat 4001 as "token refused", and
	// the reason tells an expired token (renewable by an enrolled agent)
	// from a rotated one (which waits for the operator).
	closeReasonExpired = "token expired"
)

var (
	errNotConnected = errors.New("node is not connected")
	errShuttingDown = errors.New("server is shutting down")
)

// hub is the registry of live agent sessions (one per node), of requests
// waiting for a command's result, and of event-stream subscribers. It owns
// the sessions' lifecycle: it starts each one (start), replaces a node's
// session with its newer connection (attach), closes them (closeNode,
// revoke, shutdown) and at shutdown waits for all their goroutines and its
// pinger's.
type hub struct {
	log *slog.Logger

	mu       sync.Mutex
	closed   bool                            // shutdown has begun: no session starts
	sessions map[string]*session             // node id -> live session
	waiters  map[string][]*waiter            // command id -> waiting requests
	subs     map[string]map[*subscriber]bool // node id -> event streams
	results  resultLog                       // command results seen, to recognise repeats (results.go)

	// running counts the sessions' read loops; each waits for the rest of
	// its session's goroutines (session.spawn) before it is done. Add
	// happens under mu while the hub is open and Wait only once it is
	// closed, so no Add races the Wait.
	running sync.WaitGroup

	pingStop, pingDone chan struct{} // the pinger
}

// newHub makes a hub and starts its pinger, which sends the application
// ping to every live session once per pingInterval.
func newHub(log *slog.Logger, pingInterval time.Duration) *hub {
	h := &hub{
		log:      log,
		sessions: map[string]*session{},
		waiters:  map[string][]*waiter{},
		subs:     map[string]map[*subscriber]bool{},
		pingStop: make(chan struct{}),
		pingDone: make(chan struct{}),
	}
	go h.pinger(pingInterval, pingFrame, h.pingStop, h.pingDone)
	return h
}

// start runs a new session: its read loop, on a goroutine the hub waits
// for at shutdown, and its token lifetime. The read loop is the session's
// one permanent goroutine (gws calls OnOpen, OnMessage and OnClose on it);
// the writer runs while there is something to write, the token lifetime
// on a timer, pings come from the pinger. It reports false, and starts
// nothing, once shutdown has begun.
func (h *hub) start(s *session) bool {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	h.running.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.running.Done()
		s.conn.ReadLoop()
		s.readLoopEnded()
	}()
	s.armLifetime()
	return true
}

// attach makes s the node's live session, closing the one it replaces. It
// reports false when the hub is shutting down.
func (h *hub) attach(s *session) bool {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	old := h.sessions[s.nodeID]
	h.sessions[s.nodeID] = s
	h.mu.Unlock()
	if old != nil {
		h.log.Warn("node session replaced by a new connection", "node", s.nodeID,
			"old_remote", old.remote, "new_remote", s.remote)
		old.close(closeReplaced, "replaced by a newer connection")
	}
	return true
}

// detach forgets s if it is still the node's live session and ends the log
// streams bound to it.
func (h *hub) detach(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions[s.nodeID] == s {
		delete(h.sessions, s.nodeID)
	}
	for _, ws := range h.waiters {
		for _, w := range ws {
			if w.stream && w.sess == s {
				w.loseSession()
			}
		}
	}
}

// The pinger spreads each round of pings over the interval in ticks of
// about pingsPerTick sessions (at least minPingTicks ticks a round), so a
// fleet does not get its pings, and the server its pongs, in bursts that
// other work queues behind: eight bursts of 2,400 each for 19,000 agents
// at the 30 s default were in the dispatch latency's worst percent.
const (
	pingsPerTick = 50
	minPingTicks = 8
	maxPingTicks = 3000
)

// pinger sends the application ping to every live session once per
// interval until stop is closed. One goroutine for all sessions: a session
// has no ticker or goroutine of its own for it. A session whose queue is
// full (the agent is not reading) is skipped; its read deadline decides.
// A round pings the sessions live when it starts; one attached later
// waits for the next round (its first ping comes within two intervals,
// well inside the three of silence that end a session).
func (h *hub) pinger(interval time.Duration, frame []byte, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(max(interval/minPingTicks, time.Millisecond))
	defer t.Stop()
	var round []*session
	sent, ticks := 0, 0
	for tick := 0; ; tick++ {
		if tick == ticks { // a new round
			clear(round)
			round = round[:0]
			h.mu.Lock()
			for _, s := range h.sessions {
				round = append(round, s)
			}
			h.mu.Unlock()
			ticks = min(max(len(round)/pingsPerTick, minPingTicks), maxPingTicks)
			t.Reset(max(interval/time.Duration(ticks), time.Millisecond))
			sent, tick = 0, 0
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for due := len(round) * (tick + 1) / ticks; sent < due; sent++ {
			round[sent].trySend(frame)
			round[sent] = nil
		}
	}
}

// session returns the node's live session, or nil.
func (h *hub) session(nodeID string) *session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[nodeID]
}

// connected reports whether the node has a live session.
func (h *hub) connected(nodeID string) bool { return h.session(nodeID) != nil }

// closeNode closes the node's live session, if any.
func (h *hub) closeNode(nodeID string, code uint16, reason string) {
	if s := h.session(nodeID); s != nil {
		s.close(code, reason)
	}
}

// revoke closes the node's session unless it authenticated with the token
// whose jti is current.
func (h *hub) revoke(nodeID, current string) {
	if s := h.session(nodeID); s != nil && s.tokenID() != current {
		s.close(closeTokenRotated, closeReasonRotated)
	}
}

// waiter is a request waiting for the command_result of one command id, and
// for a followed log stream also its log messages.
type waiter struct {
	id     string
	nodeID string
	frame  []byte // the command as sent; resent on the node's next session
	stream bool   // follow logs: bound to one session, never resent

	sess     *session // the session it was last sent on; guarded by hub.mu
	answered bool     // it took a command_result; guarded by hub.mu

	result  chan []byte   // capacity 1: the command_result frame
	logs    chan []byte   // stream only: log frames
	lost    chan struct{} // stream only: closed when its session ends
	done    chan struct{} // closed when the request stops waiting
	dropped atomic.Int64  // log frames dropped because the client was too slow

	lostOnce, doneOnce sync.Once
}

func newWaiter(id, nodeID string, frame []byte, stream bool) *waiter {
	w := &waiter{id: id, nodeID: nodeID, frame: frame, stream: stream,
		result: make(chan []byte, 1), lost: make(chan struct{}), done: make(chan struct{})}
	if stream {
		w.logs = make(chan []byte, logBuffer)
	}
	return w
}

func (w *waiter) loseSession() { w.lostOnce.Do(func() { close(w.lost) }) }

// logBuffer is how many log frames a follow stream buffers before the
// agent's read loop waits for the HTTP client (backpressure), and
// logBlockTimeout how long it waits before dropping a frame instead.
const (
	logBuffer       = 1024
	logBlockTimeout = 2 * time.Second
)

// register adds w and binds it to the node's live session, which it returns;
// with no live session nothing is registered and errNotConnected returned.
func (h *hub) register(w *waiter) (*session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errShuttingDown
	}
	s := h.sessions[w.nodeID]
	if s == nil {
		return nil, errNotConnected
	}
	w.sess = s
	h.waiters[w.id] = append(h.waiters[w.id], w)
	return s, nil
}

// unregister removes w; the request no longer waits.
func (h *hub) unregister(w *waiter) {
	w.doneOnce.Do(func() { close(w.done) })
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := slices.DeleteFunc(h.waiters[w.id], func(x *waiter) bool { return x == w })
	if len(ws) == 0 {
		delete(h.waiters, w.id)
	} else {
		h.waiters[w.id] = ws
	}
}

// deliverResult hands a command_result frame to every request waiting for
// that command id on that node. It reports whether a request took it: one
// that already has a result keeps it (a repeated result is the same
// result; the first one counts).
func (h *hub) deliverResult(nodeID, commandID string, frame []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	taken := false
	for _, w := range h.waiters[commandID] {
		if w.nodeID != nodeID || w.answered {
			continue // a repeated result is the same result: the first one counts
		}
		select {
		case w.result <- frame:
			w.answered, taken = true, true
		default:
		}
	}
	return taken
}

// deliverLog hands a log frame to the stream waiting for it. When the
// stream's buffer is full it waits up to logBlockTimeout — slowing the
// agent's reads, which is the backpressure docs/protocol.md asks for — and then
// drops the frame and counts it.
func (h *hub) deliverLog(nodeID, commandID string, frame []byte) {
	h.mu.Lock()
	var targets []*waiter
	for _, w := range h.waiters[commandID] {
		if w.stream && w.nodeID == nodeID {
			targets = append(targets, w)
		}
	}
	h.mu.Unlock()
	for _, w := range targets {
		select {
		case w.logs <- frame:
			continue
		default:
		}
		t := time.NewTimer(logBlockTimeout)
		select {
		case w.logs <- frame:
		case <-w.done:
		case <-t.C:
			w.dropped.Add(1)
		}
		t.Stop()
	}
}

// resend sends the commands still waiting for a result from the node over
// its new session s, once the agent has identified itself on it. An agent
// that has seen a command id before does not run it twice (docs/protocol.md): it
// replays the stored result or sends it when the command finishes, so a
// command that was lost with the old connection is delivered and one that
// was not costs nothing.
func (h *hub) resend(s *session) {
	h.mu.Lock()
	var frames [][]byte
	for _, ws := range h.waiters {
		for _, w := range ws {
			if w.nodeID == s.nodeID && !w.stream && w.sess != s {
				w.sess = s
				frames = append(frames, w.frame)
			}
		}
	}
	closed := h.closed
	h.mu.Unlock()
	if len(frames) == 0 || closed {
		return
	}
	h.log.Info("resending commands after reconnect", "node", s.nodeID, "commands", len(frames))
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		for _, f := range frames {
			if err := s.send(ctx, f); err != nil {
				return
			}
		}
	})
}

// subscriber is one event stream (GET /api/nodes/{id}/events).
type subscriber struct {
	nodeID   string
	ch       chan sseEvent
	gone     chan struct{} // closed when the hub dropped it for being slow
	goneOnce sync.Once
}

// subscriberBuffer is how many events a stream may fall behind before it is
// cut off (the client reconnects); heartbeats must never wait for a browser.
const subscriberBuffer = 256

func (h *hub) subscribe(nodeID string) *subscriber {
	sub := &subscriber{nodeID: nodeID, ch: make(chan sseEvent, subscriberBuffer), gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[nodeID] == nil {
		h.subs[nodeID] = map[*subscriber]bool{}
	}
	h.subs[nodeID][sub] = true
	return sub
}

func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[sub.nodeID], sub)
	if len(h.subs[sub.nodeID]) == 0 {
		delete(h.subs, sub.nodeID)
	}
}

// publishRaw publishes an agent's frame as event name; the event is built
// only when the node has event streams (most heartbeats have none).
func (h *hub) publishRaw(nodeID, name string, frame []byte) {
	h.mu.Lock()
	n := len(h.subs[nodeID])
	h.mu.Unlock()
	if n > 0 {
		h.publish(nodeID, rawEvent(name, frame))
	}
}

// publish sends ev to the node's event streams without ever blocking.
func (h *hub) publish(nodeID string, ev sseEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[nodeID] {
		select {
		case sub.ch <- ev:
		default:
			sub.goneOnce.Do(func() { close(sub.gone) })
			delete(h.subs[nodeID], sub)
		}
	}
}

// shutdown refuses new sessions, stops the pinger, closes the live
// sessions with 1001 and waits for their goroutines, or for ctx; then it
// cuts the connections still open.
func (h *hub) shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	sessions := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	close(h.pingStop)
	<-h.pingDone
	for _, s := range sessions {
		s.close(closeGoingAway, "server shutting down")
	}
	if err := waitGroup(ctx, &h.running); err != nil {
		for _, s := range sessions {
			_ = s.conn.NetConn().Close()
		}
		return err
	}
	return nil
}
