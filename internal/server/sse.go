package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// sseEvent is one Server-Sent Event: a name and a single-line JSON payload.
type sseEvent struct {
	name string
	data []byte
}

// rawEvent wraps an agent frame, compacted so it fits one "data:" line.
func rawEvent(name string, frame []byte) sseEvent {
	var b bytes.Buffer
	if err := json.Compact(&b, frame); err != nil {
		return sseEvent{name: name, data: mustMarshal(map[string]string{"error": "unreadable frame"})}
	}
	return sseEvent{name: name, data: b.Bytes()}
}

func jsonEvent(name string, v any) sseEvent { return sseEvent{name: name, data: mustMarshal(v)} }

// connectionEvent is the payload of connect and disconnect events.
func connectionEvent(name, nodeID, remote, reason string) sseEvent {
	return jsonEvent(name, struct {
		NodeID     string `json:"nodeId"`
		RemoteAddr string `json:"remoteAddr,omitempty"`
		Reason     string `json:"reason,omitempty"`
		Timestamp  string `json:"timestamp"`
	}{nodeID, remote, reason, protocol.Timestamp(time.Now())})
}

// SSE stream timings.
const (
	sseKeepalive    = 15 * time.Second // comment line so proxies keep the stream open
	sseWriteTimeout = 10 * time.Second // one event to a slow client
)

// sseWriter writes an event stream. Each write has a deadline, so a client
// that stops reading ends its stream instead of holding a goroutine forever.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// startSSE sends the stream's headers.
func startSSE(w http.ResponseWriter) (*sseWriter, error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	return s, s.flush()
}

func (s *sseWriter) send(ev sseEvent) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", ev.name, ev.data); err != nil {
		return err
	}
	return s.flush()
}

func (s *sseWriter) keepalive() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := fmt.Fprint(s.w, ": keepalive\n\n"); err != nil {
		return err
	}
	return s.flush()
}

func (s *sseWriter) flush() error { return s.rc.Flush() }

// handleEvents streams a node's events: first "node" (the node object), then
// connect, disconnect, agent_identify, heartbeat, command_result,
// command_progress, container_event and inventory as they happen. A client
// too slow to keep up gets an "error" event and the stream ends.
func (srv *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	sub := srv.hub.subscribe(n.ID)
	defer srv.hub.unsubscribe(sub)
	out, err := startSSE(w)
	if err != nil {
		return
	}
	if out.send(jsonEvent("node", srv.nodeView(n))) != nil {
		return
	}
	tick := time.NewTicker(sseKeepalive)
	defer tick.Stop()
	for {
		select {
		case ev := <-sub.ch:
			if out.send(ev) != nil {
				return
			}
		case <-sub.gone:
			_ = out.send(jsonEvent("error", apiError{Error: "event stream fell behind; reconnect"}))
			return
		case <-tick.C:
			if out.keepalive() != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-srv.closing:
			return
		}
	}
}
