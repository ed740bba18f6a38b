package agent_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// Two agents with one node's token replace each other at the server again
// and again (close 4000): the agent says so, once per period, with the fix.
// One replacement alone (a half-open connection, an old doctor) is not
// blamed on another agent.
func TestReplacedAgainAndAgainSaysAnotherAgentUsesTheToken(t *testing.T) {
	const msg = "another agent is using this node's token"
	h := start(t, nil, setup{})
	h.identified()

	h.srv.CloseConns(4000, "replaced by a newer connection")
	h.identified()
	h.srv.CloseConns(1001, "server restarting") // ends the streak
	h.identified()
	h.srv.CloseConns(4000, "replaced by a newer connection")
	h.identified()
	if n := len(h.logs.entries(msg)); n != 0 {
		t.Fatalf("%d %q lines after single replacements, want none", n, msg)
	}

	for range 4 {
		h.srv.CloseConns(4000, "replaced by a newer connection")
		h.identified()
	}
	lines := h.logs.entries(msg)
	if len(lines) != 1 {
		t.Fatalf("%d %q lines for one streak of replacements, want 1 (rate-limited)", len(lines), msg)
	}
	if lines[0]["level"] != "ERROR" || lines[0]["replacedInARow"] != float64(2) {
		t.Errorf("line %v, want level ERROR and replacedInARow 2", lines[0])
	}
	if hint, _ := lines[0]["hint"].(string); !strings.Contains(hint, "its own node") || !strings.Contains(hint, "close 4000") {
		t.Errorf("hint %q does not say what to do", hint)
	}
}

// A SERVER_URL ending in /api makes the agent dial /api/api/ws/nodes, which
// a Lormas server answers with 404: the log names the URL and the
// SERVER_URL to set.
func TestNotFoundNamesTheURLAndTheFix(t *testing.T) {
	var base string
	h := start(t, nil, setup{noStart: true, opts: func(o *agent.Options) {
		base = o.ServerURL
		o.ServerURL += "/api"
	}})
	h.srv.Refuse(http.StatusNotFound)
	h.run()
	testsupport.WaitFor(t, "a connection failure logged", func() bool { return len(h.logs.entries("connection failed")) > 0 })
	line := h.logs.entries("connection failed")[0]
	errText, _ := line["err"].(string)
	hint, _ := line["hint"].(string)
	if !strings.Contains(errText, base+"/api/api/ws/nodes?token=REDACTED") || !strings.Contains(errText, "HTTP 404") {
		t.Errorf("err %q does not name the URL dialled", errText)
	}
	if !strings.Contains(hint, "SERVER_URL ends in /api: set SERVER_URL="+base) {
		t.Errorf("hint %q does not name the SERVER_URL to set (%s)", hint, base)
	}
}
