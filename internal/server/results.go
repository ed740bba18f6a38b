package server

import (
	"crypto/sha256"
	"sync"
)

// resultWindow is how many command results the server remembers to
// recognise a repeat: an agent sends a result again after a reconnect when
// the connection died before the server confirmed reading it (a pong to a
// later ping), within seconds or minutes of the first. 16 bytes an entry
// plus its map slot: about 3 MiB when full.
const resultWindow = 1 << 16

// resultLog remembers the latest command results by node and command id.
// Its zero value is ready to use.
type resultLog struct {
	mu   sync.Mutex
	seen map[[16]byte]struct{}
	ring [][16]byte // the keys in seen, oldest at next once full
	next int
}

// firstResult records a command_result of commandID from nodeID and
// reports whether it is the first the server has seen recently. A repeated
// command_result for a command id is the same result (docs/protocol.md: the agent
// never executes a command id twice, it replays the stored result): the
// first one counts, a repeat is not published again. Requests waiting for
// the id still get it (deliverResult), so a client that retried a command
// under the same id gets its answer.
func (h *hub) firstResult(nodeID, commandID string) bool {
	return h.results.first(nodeID, commandID)
}

func (l *resultLog) first(nodeID, commandID string) bool {
	sum := sha256.Sum256([]byte(nodeID + "\x00" + commandID))
	key := [16]byte(sum[:16])
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = make(map[[16]byte]struct{})
	}
	if _, ok := l.seen[key]; ok {
		return false
	}
	if len(l.ring) < resultWindow {
		l.ring = append(l.ring, key)
	} else {
		delete(l.seen, l.ring[l.next])
		l.ring[l.next] = key
		l.next = (l.next + 1) % resultWindow
	}
	l.seen[key] = struct{}{}
	return true
}
