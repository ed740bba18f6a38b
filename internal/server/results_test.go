package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// TestRepeatedResultFirstWins: an agent sends a command_result again (it
// re-sends results the server did not confirm before a reconnect). The
// waiting request gets the first; the repeat is not published to event
// streams again and breaks nothing; a client that retries the command
// under the same id still gets its (replayed) answer.
func TestRepeatedResultFirstWins(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("repeats")
	events := h.stream("/api/nodes/" + n.ID + "/events")
	a := h.connect(n.ID, n.Token)
	res := h.postCommand(n.ID, map[string]any{"id": "cmd-1", "action": "start", "containerId": "web"})
	cmd := a.command()
	a.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: "first"}, nil))
	a.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: "second"}, nil))
	r := <-res
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"first"`) {
		t.Fatalf("answer %d %s, want the first result", r.status, r.body)
	}
	// A later repeat, then a marker: the stream shows one result.
	a.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: "third"}, nil))
	a.send(protocol.CommandProgress{CommandID: "marker", Stage: "s"})
	var results []string
	for {
		ev := events.next("node", "connect", "agent_identify", "heartbeat")
		if ev.name == "command_progress" {
			break
		}
		if ev.name == "command_result" {
			results = append(results, string(ev.data))
		}
	}
	if len(results) != 1 || !strings.Contains(results[0], `"first"`) {
		t.Errorf("event stream results %q, want only the first", results)
	}

	// The client retries under the same id: the agent replays its stored
	// result, which reaches the new request.
	res = h.postCommand(n.ID, map[string]any{"id": "cmd-1", "action": "start", "containerId": "web"})
	if again := a.command(); again.ID != "cmd-1" {
		t.Fatalf("retried command %+v", again)
	}
	a.send(protocol.Success("cmd-1", protocol.MessageResult{Message: "first"}, nil))
	if r := <-res; r.status != http.StatusOK || !strings.Contains(string(r.body), `"first"`) {
		t.Errorf("retry answered %d %s, want the replayed result", r.status, r.body)
	}
}

// TestResultLogBounded: the log of results seen holds resultWindow keys.
func TestResultLogBounded(t *testing.T) {
	var l resultLog
	for i := range resultWindow + 10 {
		if !l.first("n", fmt.Sprint(i)) {
			t.Fatalf("result %d taken for a repeat", i)
		}
	}
	if len(l.seen) != resultWindow || len(l.ring) != resultWindow {
		t.Errorf("holds %d keys (ring %d), want %d", len(l.seen), len(l.ring), resultWindow)
	}
	if l.first("n", fmt.Sprint(resultWindow+5)) {
		t.Error("a recent result not recognised as a repeat")
	}
	if !l.first("n", "0") {
		t.Error("the oldest result still remembered past the window")
	}
	if !l.first("other-node", fmt.Sprint(resultWindow+5)) {
		t.Error("the same command id of another node taken for a repeat")
	}
}
