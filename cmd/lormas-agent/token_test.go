package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/testsupport"
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
			var stdout, stderr testsupport.Buffer
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

// TestNoCredentialInAnyURL: with NODE_TOKEN_IN_QUERY=false, an agent that
// enrolls puts neither the enrollment token nor the issued node token in
// any request URL; both travel in the Authorization header only.
func TestNoCredentialInAnyURL(t *testing.T) {
	const enrollToken = "enroll-secret-for-the-url-test"
	var mu sync.Mutex
	var urls, auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		urls = append(urls, r.URL.RequestURI())
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/api/nodes/enroll" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]string{"id": "node-123", "name": "edge-9", "token": testToken})
			return
		}
		http.Error(w, "unauthorized", http.StatusUnauthorized) // the dial: refused, the agent gives up
	}))
	defer srv.Close()
	t.Chdir(t.TempDir())
	env := []string{
		"SERVER_URL=" + srv.URL, "ENROLLMENT_TOKEN=" + enrollToken, "NODE_NAME=edge-9",
		"STATE_DIR=" + t.TempDir(), "HEALTH_ADDR=", "NODE_TOKEN_IN_QUERY=false",
		"MAX_RECONNECT_ATTEMPTS=1", "RECONNECT_DELAY=10ms", "RECONNECT_MAX_DELAY=20ms",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr testsupport.Buffer
	if code := run(ctx, nil, env, &stdout, &stderr); code != exitFailure {
		t.Fatalf("exit %d, want 1 (the dial is refused)\n%s", code, stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	sawEnroll, sawDial := false, false
	for i, u := range urls {
		if strings.Contains(u, "?") || strings.Contains(u, enrollToken) || strings.Contains(u, testToken) {
			t.Errorf("request URL %q carries a query or a credential", u)
		}
		switch {
		case strings.HasPrefix(u, "/api/nodes/enroll"):
			sawEnroll = sawEnroll || auths[i] == "Bearer "+enrollToken
		case strings.HasPrefix(u, "/api/ws/nodes"):
			sawDial = sawDial || auths[i] == "Bearer "+testToken
		}
	}
	if !sawEnroll || !sawDial {
		t.Errorf("requests %q: want an enrollment with the enrollment token and a dial with the issued token, both in the header", urls)
	}
}
