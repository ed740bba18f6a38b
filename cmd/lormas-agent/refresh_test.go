package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// Review M4, against the whole program: a token a hostile server (or a man
// in the middle of ws://) planted through token_refresh, plausible enough
// to be dialled with and issued later than the token the operator then
// wrote into NODE_TOKEN_FILE, is refused by the real server once, dropped
// from STATE_DIR, and the agent connects with the operator's token.
func TestPlantedRefreshedTokenIsDropped(t *testing.T) {
	t.Chdir(t.TempDir())
	now := time.Now()
	planted := testsupport.SignNodeToken(t, "node-7", "planted", now.Add(2*time.Minute), now.Add(time.Hour))
	rotated := testsupport.SignNodeToken(t, "node-7", "rotated", now, now.Add(time.Hour))
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: rotated})
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	plantedFile := filepath.Join(state, enroll.RefreshedFileName)
	if err := os.WriteFile(plantedFile, []byte(planted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, nil, []string{"SERVER_URL=" + srv.URL(), "NODE_TOKEN_FILE=" + tokenFile, "STATE_DIR=" + state,
			"RECONNECT_DELAY=10ms", "RECONNECT_MAX_DELAY=50ms", "HEALTH_ADDR=", "LOG_LEVEL=debug", "LOG_FORMAT=json"}, &stdout, &stderr)
	}()
	srv.Expect(protocol.TypeAgentIdentify)
	ups := srv.Upgrades()
	if len(ups) != 2 || ups[0].Status != http.StatusUnauthorized || ups[0].Query.Get("token") != planted ||
		ups[1].Status != http.StatusSwitchingProtocols || ups[1].Query.Get("token") != rotated {
		t.Errorf("%d dials; want the planted token refused, then the operator's token accepted", len(ups))
	}
	if _, err := os.Stat(plantedFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the planted token is still in STATE_DIR: %v", err)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d\n%s", code, stderr.String())
	}
	out := stdout.String() + stderr.String()
	if !strings.Contains(out, "server refused the refreshed node token") {
		t.Errorf("no log line about the dropped token:\n%s", out)
	}
	for _, tok := range []string{planted, rotated} {
		if strings.Contains(out, tok) {
			t.Errorf("a token in the output")
		}
	}
}
