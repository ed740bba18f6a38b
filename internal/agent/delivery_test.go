package agent_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestResultsRedeliveredAfterHalfOpenConnection: the server stops reading
// (a half-open connection) while results are written into it, then the
// connection is cut, losing what the server had not read. Every result
// arrives after the reconnect, in order, none executed twice; results the
// server had read before are sent again and the server sees duplicates. The
// agent used to count a result as delivered once written to the socket, and
// lost all of them but the first.
func TestResultsRedeliveredAfterHalfOpenConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		// keepalive: the agent gives the connection up (read timeout)
		// before it is cut; else it is cut while the agent still waits.
		keepalive bool
	}{
		{"cut while stalled", false},
		{"silent past the keepalive", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testRedelivery(t, tc.keepalive) })
	}
}

func testRedelivery(t *testing.T, keepalive bool) {
	const n = 40
	gates := map[string]chan struct{}{}
	for i := range n {
		gates[fmt.Sprint("c", i)] = make(chan struct{})
	}
	rt := &agenttest.Runtime{StartFunc: func(ctx context.Context, id string) error {
		<-gates[id]
		return nil
	}}
	timing := agent.Timing{PingInterval: time.Hour, ReadTimeout: time.Hour}
	if keepalive {
		timing = agent.Timing{PingInterval: 50 * time.Millisecond, ReadTimeout: 400 * time.Millisecond}
	}
	obs := &deliveries{}
	h := start(t, rt, setup{timing: timing, opts: func(o *agent.Options) {
		o.MaxConcurrentCommands = n
		o.Observer = obs
	}})
	h.identified()
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("r%02d", i))
		h.send(protocol.Command{ID: ids[i], Action: protocol.ActionStart, ContainerID: fmt.Sprint("c", i)})
	}
	testsupport.WaitFor(t, "every command running", func() bool { return rt.CallCount("Start") == n })

	h.srv.SetReadDelay(time.Hour) // the server reads one more frame, then nothing
	// The results in a known order: r00, r01, ...
	for i := range n {
		close(gates[fmt.Sprint("c", i)])
		testsupport.WaitFor(t, "the result written", func() bool {
			return len(h.logs.entries("command done")) > i && agent.OutboxUnwritten(h.agent) == 0
		})
	}
	if keepalive {
		ctx := waitCtx(t)
		if err := h.srv.WaitUpgrades(ctx, 2); err != nil { // the agent redials
			t.Fatal(err)
		}
	}
	h.srv.CutConns()
	h.srv.SetReadDelay(0)

	// After the next identify every result comes, in order.
	ctx := waitCtx(t)
	if err := h.srv.WaitConnections(ctx, 2); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "every result", func() bool { return len(resultCounts(h.srv)) == n })
	counts := resultCounts(h.srv)
	dups := 0
	for _, id := range ids {
		dups += counts[id] - 1
	}
	var order []string
	for _, r := range h.srv.Received() {
		if res, ok := r.Msg.(protocol.CommandResult); ok && r.Conn > 1 {
			order = append(order, res.CommandID)
		}
	}
	if len(order) < n-1 || !slices.IsSorted(order) {
		t.Errorf("results after reconnect %v, want every one not read before, in the order they were produced", order)
	}
	if c := rt.CallCount("Start"); c != n {
		t.Errorf("Start ran %d times, want %d", c, n)
	}
	t.Logf("%d results, %d read before the stall and sent again (duplicates the server drops)", n, dups)
	if dups > 1 {
		t.Errorf("%d duplicates: only the result read before the stall should come twice", dups)
	}
	testsupport.WaitFor(t, "the outbox emptied by the server's confirmation", func() bool { return agent.OutboxLen(h.agent) == 0 })
	logged := 0
	for _, e := range h.logs.entries("results sent again: the previous connection ended before the server confirmed reading them") {
		c, _ := e["count"].(float64)
		logged += int(c)
	}
	if logged == 0 {
		t.Error("the re-sent results were not logged")
	}
	if got := obs.get("resent"); got != logged {
		t.Errorf("%d results re-sent by the log, %d counted for the metrics", logged, got)
	}
}

// resultCounts counts the command_results the server read, by command id.
func resultCounts(s *agenttest.Server) map[string]int {
	counts := map[string]int{}
	for _, r := range s.Received() {
		if res, ok := r.Msg.(protocol.CommandResult); ok {
			counts[res.CommandID]++
		}
	}
	return counts
}
