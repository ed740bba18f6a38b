package docker

import (
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// The agent validates a command once, when it arrives, and passes the
// Engine only its operation's arguments; these helpers do the same for the
// tests that drive the Engine directly, so a test cannot hand the Engine
// what the agent never would. The action is set from the operation.

func valid(t testing.TB, cmd *protocol.Command, action protocol.Action) *protocol.Command {
	t.Helper()
	c := *cmd
	c.Action = action
	if err := c.Validate(); err != nil {
		t.Fatalf("%s command %+v: %v", action, c, err)
	}
	return &c
}

func createOf(t testing.TB, cmd *protocol.Command) protocol.CreateParams {
	t.Helper()
	p, err := valid(t, cmd, protocol.ActionCreate).CreateParams()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func logsOf(t testing.TB, cmd *protocol.Command) protocol.LogsParams {
	t.Helper()
	p, err := valid(t, cmd, protocol.ActionLogs).LogsParams()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func limitsOf(t testing.TB, res *protocol.Resources) protocol.Limits {
	t.Helper()
	l, err := valid(t, &protocol.Command{ContainerID: "c", Resources: res}, protocol.ActionUpdate).UpdateLimits()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func execOf(t testing.TB, cmd *protocol.Command) protocol.ExecParams {
	t.Helper()
	return valid(t, cmd, protocol.ActionExec).ExecParams()
}

func attachOf(t testing.TB, cmd *protocol.Command) protocol.AttachParams {
	t.Helper()
	return valid(t, cmd, protocol.ActionAttach).AttachParams()
}

func statsOf(t testing.TB, cmd *protocol.Command) protocol.StatsParams {
	t.Helper()
	return valid(t, cmd, protocol.ActionStats).StatsParams()
}
