package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/testsupport"
)

// api is a small client of lormas-server's REST API, as curl would use it.
type api struct {
	t     testing.TB
	base  string // http://127.0.0.1:port
	token string // admin token
}

type apiNode struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Description   string          `json:"description"`
	Token         string          `json:"token"`
	CreatedAt     string          `json:"createdAt"`
	Connected     bool            `json:"connected"`
	LastHeartbeat string          `json:"lastHeartbeat"`
	Resources     json.RawMessage `json:"resources"`
	AgentVersion  string          `json:"agentVersion"`
}

type apiResult struct {
	Type      string          `json:"type"`
	CommandID string          `json:"commandId"`
	Status    string          `json:"status"`
	Result    json.RawMessage `json:"result"`
	Error     string          `json:"error"`
	Code      string          `json:"code"`
	Warnings  []string        `json:"warnings"`
}

// do sends a JSON request and decodes a JSON answer into out (when non-nil).
func (a *api) do(method, path, bearer string, body, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	c := &http.Client{Timeout: 90 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	if resp.StatusCode >= 300 {
		a.t.Logf("%s %s -> %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

func (a *api) createNode(name string) apiNode {
	a.t.Helper()
	var n apiNode
	if code := a.do("POST", "/api/nodes", a.token, map[string]string{"name": name, "description": "e2e node"}, &n); code != http.StatusCreated {
		a.t.Fatalf("POST /api/nodes = %d, want 201", code)
	}
	if n.ID == "" || n.Token == "" || n.Name != name || n.CreatedAt == "" {
		a.t.Fatalf("POST /api/nodes returned %+v, want id, name, token, createdAt", n)
	}
	return n
}

func (a *api) node(id string) apiNode {
	a.t.Helper()
	var n apiNode
	if code := a.do("GET", "/api/nodes/"+id, a.token, nil, &n); code != http.StatusOK {
		a.t.Fatalf("GET /api/nodes/%s = %d", id, code)
	}
	return n
}

// command runs one command through the server and returns the agent's result.
func (a *api) command(nodeID string, cmd map[string]any) apiResult {
	a.t.Helper()
	var r apiResult
	if code := a.do("POST", "/api/nodes/"+nodeID+"/commands", a.token, cmd, &r); code != http.StatusOK {
		a.t.Fatalf("POST commands %v = %d, want 200", cmd, code)
	}
	return r
}

// mustSucceed runs cmd and fails the test unless its status is success.
func (a *api) mustSucceed(nodeID string, cmd map[string]any) apiResult {
	a.t.Helper()
	r := a.command(nodeID, cmd)
	if r.Status != "success" {
		a.t.Fatalf("command %v: status %s, error %q (code %s)", cmd, r.Status, r.Error, r.Code)
	}
	return r
}

func (a *api) waitConnected(nodeID string, want bool, d time.Duration) {
	a.t.Helper()
	testsupport.Eventually(a.t, d, func() error {
		if n := a.node(nodeID); n.Connected != want {
			return fmt.Errorf("node %s connected=%v, want %v", nodeID, n.Connected, want)
		}
		return nil
	})
}

func resultField[T any](t testing.TB, r apiResult) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Result, &v); err != nil {
		t.Fatalf("decode result %s: %v", r.Result, err)
	}
	return v
}
