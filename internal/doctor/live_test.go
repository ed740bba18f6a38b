package doctor

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/server"
	"github.com/lormas/lormas-agent/internal/transport"
)

// `lormas-agent doctor` on a live node must not disconnect the running
// agent (issue 11): against the reference server, with a session of the
// node open, the upgrade check passes and the session stays up and
// attached.
func TestCheckUpgradeLeavesTheRunningAgentConnected(t *testing.T) {
	const admin = "doctor-test-admin-token"
	cfg, err := server.LoadConfig(map[string]string{"DATA_DIR": t.TempDir(), "ADMIN_TOKEN": admin})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		srv.Close()
		hs.Close()
	})
	api := func(method, path string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(`{"name":"live-node"}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	var node struct{ ID, Token string }
	api("POST", "/api/nodes", &node)
	base, err := endpoint.Parse(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	running, err := transport.Dial(ctx, transport.Config{Server: base, Token: node.Token, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close(transport.CloseNormal, "")
	connected := func() bool {
		var n struct{ Connected bool }
		api("GET", "/api/nodes/"+node.ID, &n)
		return n.Connected
	}
	for deadline := time.Now().Add(10 * time.Second); !connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the running agent's session was not attached")
		}
	}

	r := CheckUpgrade(ctx, base, node.Token, true, nil, transport.Direct, "test", timeout)
	if r.Status != OK || !strings.Contains(r.Detail, "a running agent stays connected") {
		t.Errorf("upgrade check: %s %q", r.Status, r.Detail)
	}
	select {
	case <-running.Done():
		t.Fatalf("doctor disconnected the running agent: %v", running.Err())
	default:
	}
	if !connected() {
		t.Error("the node is not connected after doctor's check")
	}
}
