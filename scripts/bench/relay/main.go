// Command relay is the least an agent can do for a logs command, the floor
// scripts/bench measures lormas-agent against besides the direct call: it
// dials the benchmark's WebSocket endpoint with NODE_TOKEN, identifies,
// and answers each logs command with the one Docker call, its lines as a
// command_result, on the same libraries as lormas-agent (gws, the Docker
// client). It checks nothing, limits nothing, logs nothing and answers
// nothing else: the two WebSocket hops and process wake-ups between the
// server and Docker are all it adds to the direct call.
//
//	SERVER_URL=ws://host:port NODE_TOKEN=... relay
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/lxzan/gws"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	conn, _, err := gws.NewClient(&relay{cli: cli}, &gws.ClientOption{
		Addr:          strings.TrimSuffix(os.Getenv("SERVER_URL"), "/") + "/api/ws/nodes",
		RequestHeader: http.Header{"Authorization": {"Bearer " + os.Getenv("NODE_TOKEN")}},
	})
	if err != nil {
		return err
	}
	if err := conn.WriteMessage(gws.OpcodeText, []byte(`{"type":"agent_identify","nodeName":"relay"}`)); err != nil {
		return err
	}
	conn.ReadLoop()
	return nil
}

type relay struct {
	gws.BuiltinEventHandler
	cli *client.Client
}

type command struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	Action      string `json:"action"`
	ContainerID string `json:"containerId"`
	Lines       int    `json:"lines"`
}

type result struct {
	Type      string `json:"type"`
	CommandID string `json:"commandId"`
	Status    string `json:"status"`
	Result    any    `json:"result,omitempty"`
	Error     string `json:"error,omitempty"`
}

type logsResult struct {
	Logs []string `json:"logs"`
}

func (r *relay) OnMessage(c *gws.Conn, m *gws.Message) {
	var cmd command
	err := json.Unmarshal(m.Bytes(), &cmd)
	m.Close()
	if err != nil || cmd.Type != "command" {
		return
	}
	res := result{Type: "command_result", CommandID: cmd.ID, Status: "success"}
	if cmd.Action != "logs" {
		res.Status, res.Error = "error", "the relay answers logs commands only"
	} else if lines, err := r.logs(cmd.ContainerID, cmd.Lines); err != nil {
		res.Status, res.Error = "error", err.Error()
	} else {
		res.Result = logsResult{Logs: lines}
	}
	frame, _ := json.Marshal(res)
	_ = c.WriteMessage(gws.OpcodeText, frame)
}

func (r *relay) logs(id string, n int) ([]string, error) {
	rc, err := r.cli.ContainerLogs(context.Background(), id,
		container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(n)})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"), nil
}
