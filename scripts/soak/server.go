package main

import (
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// Command kinds: what the soak expects of each.
const (
	kindLoad    = "load"    // the generated load: answered exactly once in effect
	kindProbe   = "probe"   // the replay probe's own commands
	kindReplay  = "replay"  // an old id sent again: never executed again
	kindForeign = "foreign" // a command on an unmanaged container: forbidden
	kindBad     = "bad"     // an invalid command: an invalid error
	kindBig     = "big"     // a 2 MiB frame: never answered (1009), not resent
)

// tracked is one command id the server sent.
type tracked struct {
	kind    string
	target  string // the container, "" for list
	frame   []byte
	sent    time.Time // first sent
	results int
	first   protocol.CommandResult
	firstAt time.Time
	last    protocol.CommandResult
	done    chan struct{} // closed with the first result
}

// recvEvent is a container_event the server read.
type recvEvent struct {
	key string // containerId action timestamp
	at  time.Time
}

// interval is a time the agent was connected and identified, as the
// server saw it.
type interval struct{ from, to time.Time }

// server is the soak's Lormas server: it accepts the agent (any token),
// sends commands, resends the unanswered ones after every identify (as the
// reference server does) and records everything the agent sends.
type server struct {
	hs   *http.Server
	up   *gws.Upgrader
	addr string

	mu          sync.Mutex
	refuseUntil time.Time
	cur         *peer
	peers       map[*gws.Conn]*peer
	cmds        map[string]*tracked
	order       []string
	events      []recvEvent
	inventories []time.Time
	identifies  []time.Time
	intervals   []interval
	open        *interval      // the current one
	busy        map[string]int // container -> load commands without a result
	upgrades    int
	refused     int
}

// peer is one connection; frames go out through its own writer so that a
// stalled connection never blocks the soak.
type peer struct {
	c   *gws.Conn
	out chan []byte
}

func newServer() (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{addr: ln.Addr().String(), peers: map[*gws.Conn]*peer{}, cmds: map[string]*tracked{}, busy: map[string]int{}}
	s.up = gws.NewUpgrader(s, &gws.ServerOption{ReadMaxPayloadSize: 64 << 20, WriteMaxPayloadSize: 64 << 20, Recovery: gws.Recovery})
	s.hs = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.upgrades++
		refuse := time.Now().Before(s.refuseUntil)
		if refuse {
			s.refused++
		}
		s.mu.Unlock()
		if refuse {
			http.Error(w, `{"error":"soak: refusing upgrades"}`, http.StatusServiceUnavailable)
			return
		}
		c, err := s.up.Upgrade(w, r)
		if err != nil {
			return
		}
		p := &peer{c: c, out: make(chan []byte, 8192)}
		s.mu.Lock()
		s.peers[c] = p
		s.mu.Unlock()
		go p.writer()
		go c.ReadLoop()
	})}
	go func() { _ = s.hs.Serve(ln) }()
	return s, nil
}

func (p *peer) writer() {
	for f := range p.out {
		_ = p.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		op := gws.OpcodeText
		if len(f) > 0 && f[0] == 0 { // a binary frame, marked by the soak
			op, f = gws.OpcodeBinary, f[1:]
		}
		err := p.c.WriteMessage(op, f)
		// The deadline must not outlive the write: the pongs the read
		// loop writes later would fail on it once it passed, and gws
		// would close the connection (the soak used to see a reconnect
		// about 10 s into every quiet spell, its own doing).
		_ = p.c.SetWriteDeadline(time.Time{})
		if err != nil {
			_ = p.c.NetConn().Close()
			for range p.out { // drain until OnClose closes it
			}
			return
		}
	}
}

func (s *server) close() { _ = s.hs.Close() }

// track registers a command and sends it to the connected agent, if any;
// it is resent after every identify until answered.
func (s *server) track(cmd protocol.Command, kind string) *tracked {
	cmd.Type = protocol.TypeCommand
	frame, _ := json.Marshal(cmd)
	t := &tracked{kind: kind, target: cmd.ContainerID, frame: frame, sent: time.Now(), done: make(chan struct{})}
	s.mu.Lock()
	if old, ok := s.cmds[cmd.ID]; ok { // a replay of an id: keep its record
		t = old
	} else {
		s.cmds[cmd.ID] = t
		s.order = append(s.order, cmd.ID)
		if kind == kindLoad {
			s.busy[cmd.ContainerID]++
		}
	}
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		cur.send(frame)
	}
	return t
}

// sendRaw sends a frame that is not tracked.
func (s *server) sendRaw(frame []byte) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		cur.send(frame)
	}
}

func (p *peer) send(frame []byte) {
	defer func() { _ = recover() }() // closed: the connection ended
	select {
	case p.out <- frame:
	default: // a stalled connection: resent after the next identify
	}
}

// outstanding is the number of load commands for container without a
// result.
func (s *server) outstanding(container string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy[container]
}

// endInterval marks the agent as not reachable from now (a fault began).
func (s *server) endInterval(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endIntervalLocked(at)
}

func (s *server) endIntervalLocked(at time.Time) {
	if s.open != nil {
		s.open.to = at
		s.intervals = append(s.intervals, *s.open)
		s.open = nil
	}
}

// current returns the identified connection.
func (s *server) current() *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// closeCurrent closes the identified connection with a close frame.
func (s *server) closeCurrent(code uint16, reason string) {
	s.mu.Lock()
	cur := s.cur
	s.cur = nil
	s.endIntervalLocked(time.Now())
	s.mu.Unlock()
	if cur != nil {
		_ = cur.c.WriteClose(code, []byte(reason))
		_ = cur.c.NetConn().Close()
	}
}

func (s *server) refuseFor(d time.Duration) {
	s.mu.Lock()
	s.refuseUntil = time.Now().Add(d)
	s.mu.Unlock()
}

func (s *server) connected() bool { return s.current() != nil }

func (s *server) OnOpen(*gws.Conn) {}

func (s *server) OnClose(c *gws.Conn, _ error) {
	s.mu.Lock()
	p := s.peers[c]
	delete(s.peers, c)
	if p != nil && s.cur == p {
		s.cur = nil
		s.endIntervalLocked(time.Now())
	}
	s.mu.Unlock()
	if p != nil {
		func() {
			defer func() { _ = recover() }()
			close(p.out)
		}()
	}
}

func (s *server) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (s *server) OnPong(*gws.Conn, []byte)     {}

func (s *server) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	now := time.Now()
	msg, err := protocol.Decode(m.Bytes())
	if err != nil {
		return
	}
	switch v := msg.(type) {
	case protocol.AgentIdentify:
		s.identified(c, now)
	case protocol.CommandResult:
		s.mu.Lock()
		t := s.cmds[v.CommandID]
		if t != nil {
			t.results++
			t.last = v
			if t.results == 1 {
				t.first, t.firstAt = v, now
				close(t.done)
				if t.kind == kindLoad {
					s.busy[t.target]--
				}
			}
		}
		s.mu.Unlock()
	case protocol.ContainerEvent:
		s.mu.Lock()
		s.events = append(s.events, recvEvent{key: v.ContainerID + " " + v.Action + " " + v.Timestamp, at: now})
		s.mu.Unlock()
	case protocol.Inventory:
		s.mu.Lock()
		s.inventories = append(s.inventories, now)
		s.mu.Unlock()
	}
}

// identified makes c the agent's connection and resends every command
// still waiting for its result (the agent answers a known id from its
// store and never runs it twice).
func (s *server) identified(c *gws.Conn, now time.Time) {
	s.mu.Lock()
	p := s.peers[c]
	old := s.cur
	s.cur = p
	s.endIntervalLocked(now)
	s.open = &interval{from: now}
	s.identifies = append(s.identifies, now)
	var frames [][]byte
	for _, id := range s.order {
		t := s.cmds[id]
		if t.results == 0 && t.kind != kindBig {
			frames = append(frames, t.frame)
		}
	}
	s.mu.Unlock()
	if old != nil && old != p {
		_ = old.c.NetConn().Close()
	}
	for _, f := range frames {
		p.send(f)
	}
}

// snapshot copies what the report needs.
type snapshot struct {
	cmds        map[string]tracked
	events      []recvEvent
	inventories []time.Time
	identifies  []time.Time
	intervals   []interval
	upgrades    int
	refused     int
}

func (s *server) snapshot(end time.Time) snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := snapshot{cmds: map[string]tracked{}, events: append([]recvEvent(nil), s.events...),
		inventories: append([]time.Time(nil), s.inventories...), identifies: append([]time.Time(nil), s.identifies...),
		intervals: append([]interval(nil), s.intervals...), upgrades: s.upgrades, refused: s.refused}
	if s.open != nil {
		out.intervals = append(out.intervals, interval{from: s.open.from, to: end})
	}
	sort.Slice(out.intervals, func(i, j int) bool { return out.intervals[i].from.Before(out.intervals[j].from) })
	for id, t := range s.cmds {
		out.cmds[id] = *t
	}
	return out
}
