package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
)

// TestNodeTokenInQuery runs the agent with NODE_TOKEN_IN_QUERY=false and
// with the default: the first sends the token only in the Authorization
// header (the upgrade URL carries none), the second also as ?token=.
func TestNodeTokenInQuery(t *testing.T) {
	for _, c := range []struct {
		setting   string
		wantQuery string
	}{
		{"NODE_TOKEN_IN_QUERY=false", ""},
		{"NODE_TOKEN_IN_QUERY=true", testToken},
	} {
		t.Run(c.setting, func(t *testing.T) {
			t.Chdir(t.TempDir())
			s := agenttest.NewServer(t, agenttest.ServerOptions{Token: testToken})
			env := []string{
				"SERVER_URL=" + s.URL(), "NODE_TOKEN=" + testToken, "STATE_DIR=" + t.TempDir(),
				"HEALTH_ADDR=", "LOG_LEVEL=debug", c.setting,
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() { done <- run(ctx, nil, env, &stdout, &stderr) }()
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			if err := s.WaitConnections(wctx, 1); err != nil {
				t.Fatalf("agent did not connect: %v\n%s", err, stderr.String())
			}
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("agent did not stop")
			}
			up := s.Upgrades()[0]
			if got := up.Query.Get("token"); got != c.wantQuery || (c.wantQuery == "" && len(up.Query) != 0) {
				t.Errorf("upgrade query %v, want token %q", up.Query, c.wantQuery)
			}
			if got := up.Header.Get("Authorization"); got != "Bearer "+testToken {
				t.Errorf("Authorization %q, want the bearer token", got)
			}
			if strings.Contains(stdout.String()+stderr.String(), testToken) {
				t.Error("token in the agent's output")
			}
		})
	}
}
