package packaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// adminAPI is a client of lormas-server's admin REST API (docs/api.md).
type adminAPI struct {
	base  string // http://127.0.0.1:port
	token string
	hc    *http.Client
}

func newAdminAPI(base, token string) *adminAPI {
	return &adminAPI{base: base, token: token, hc: &http.Client{Timeout: 2 * time.Minute}}
}

// do sends a JSON request and decodes a JSON answer into out; it returns the
// HTTP status, and an error for a transport failure or an undecodable body.
func (a *adminAPI) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s answer %q: %w", method, path, raw, err)
		}
	} else if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	return resp.StatusCode, nil
}

// node is the part of the server's node object the tests read.
type node struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Connected    bool            `json:"connected"`
	AgentVersion *string         `json:"agentVersion"`
	Resources    json.RawMessage `json:"resources"`
}

// waitNode polls GET /api/nodes until a node named name is connected and has
// sent a heartbeat (resources), and returns it.
func (a *adminAPI) waitNode(ctx context.Context, t *testing.T, name string) node {
	t.Helper()
	var last string
	for {
		var nodes []node
		_, err := a.do(ctx, http.MethodGet, "/api/nodes", nil, &nodes)
		if err == nil {
			for _, n := range nodes {
				if n.Name == name && n.Connected && len(n.Resources) > 0 && string(n.Resources) != "null" {
					return n
				}
			}
			last = fmt.Sprintf("nodes: %+v", nodes)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %q never connected with a heartbeat; last answer: %s", name, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// command posts one command and returns the agent's command_result.
func (a *adminAPI) command(ctx context.Context, t *testing.T, nodeID string, cmd protocol.Command) protocol.CommandResult {
	t.Helper()
	var res protocol.CommandResult
	if _, err := a.do(ctx, http.MethodPost, "/api/nodes/"+nodeID+"/commands", cmd, &res); err != nil {
		t.Fatalf("%s command: %v", cmd.Action, err)
	}
	if res.Status != protocol.StatusSuccess {
		t.Fatalf("%s command failed: code %s: %s", cmd.Action, res.Code, res.Error)
	}
	return res
}

// driveWorkload runs create, start, logs and delete of the test workload
// through the server and the agent on node nodeID, and checks each result
// against the real Docker Engine.
func driveWorkload(ctx context.Context, t *testing.T, api *adminAPI, cli *client.Client, nodeID, workloadImage string) {
	t.Helper()
	containerID := uniqueName("lormas-pkgtest-workload-")
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), containerID, container.RemoveOptions{Force: true})
	})
	noTTY := false
	res := api.command(ctx, t, nodeID, protocol.Command{
		Action:      protocol.ActionCreate,
		ContainerID: containerID,
		EggConfig: &protocol.EggConfig{
			Image:      workloadImage,
			PullPolicy: protocol.PullNever,
			Command:    []string{"-lines", "3"},
			TTY:        &noTTY,
		},
		Resources: &protocol.Resources{Memory: "64m", CPU: 0.5},
	})
	inspect, err := cli.ContainerInspect(ctx, containerID)
	if err != nil {
		t.Fatalf("created container %s not found in Docker: %v", containerID, err)
	}
	if got := resultField(res, "containerId"); got != inspect.ID {
		t.Errorf("create returned containerId %q, Docker has %q", got, inspect.ID)
	}
	if inspect.Config.Labels["lormas.managed"] != "true" || inspect.Config.Labels["lormas.container"] != containerID {
		t.Errorf("container labels %v: want lormas.managed=true, lormas.container=%s", inspect.Config.Labels, containerID)
	}
	if inspect.HostConfig.Memory != 64<<20 || inspect.HostConfig.NanoCPUs != 5e8 {
		t.Errorf("limits memory %d nanoCPUs %d, want %d and %d", inspect.HostConfig.Memory, inspect.HostConfig.NanoCPUs, 64<<20, int64(5e8))
	}

	api.command(ctx, t, nodeID, protocol.Command{Action: protocol.ActionStart, ContainerID: containerID})
	want := []string{"stdout line 1", "stdout line 2", "stdout line 3"}
	var lines []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		lines = nil
		lines3 := 3
		res := api.command(ctx, t, nodeID, protocol.Command{Action: protocol.ActionLogs, ContainerID: containerID, Lines: &lines3})
		if m, ok := res.Result.(map[string]any); ok {
			if ls, ok := m["logs"].([]any); ok {
				for _, l := range ls {
					lines = append(lines, fmt.Sprint(l))
				}
			}
		}
		if slices.Equal(lines, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !slices.Equal(lines, want) {
		t.Errorf("logs %q, want %q", lines, want)
	}

	res = api.command(ctx, t, nodeID, protocol.Command{Action: protocol.ActionDelete, ContainerID: containerID})
	if msg := resultField(res, "message"); !strings.Contains(strings.ToLower(msg), "removed") && !strings.Contains(strings.ToLower(msg), "deleted") {
		t.Logf("delete message %q", msg)
	}
	if _, err := cli.ContainerInspect(ctx, containerID); err == nil {
		t.Errorf("container %s still exists after delete", containerID)
	}
}

func resultField(res protocol.CommandResult, key string) string {
	if m, ok := res.Result.(map[string]any); ok {
		if v, ok := m[key]; ok {
			return fmt.Sprint(v)
		}
	}
	return ""
}
