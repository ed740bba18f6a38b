package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// client talks to lormas-server's REST API with the admin token.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// apiError is an error answer of the server, or an error result of the
// agent.
type apiError struct {
	Status int
	Msg    string
	Code   protocol.Code
}

func (e *apiError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (%s)", e.Msg, e.Code)
	}
	return e.Msg
}

// client returns the API client, configured from the environment.
func (c *cli) client() (*client, error) {
	if c.api != nil {
		return c.api, nil
	}
	raw := c.env.get("LORMAS_URL")
	if raw == "" {
		raw = "http://localhost:3000"
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("LORMAS_URL %q: want http://host:port or https://host:port", raw)
	}
	token := c.env.get("LORMAS_TOKEN")
	if f := c.env.get("LORMAS_TOKEN_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("LORMAS_TOKEN_FILE: %w", err)
		}
		token = string(b)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errors.New("no admin token: set LORMAS_TOKEN or LORMAS_TOKEN_FILE (`lormas-server admin-token` prints it; compose: docker compose exec -T lormas-server lormas-server admin-token)")
	}
	c.api = &client{base: u, token: token, http: &http.Client{}}
	return c.api, nil
}

// do sends a JSON request and decodes a 2xx answer into out (when non-nil).
func (cl *client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := cl.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("unreadable answer from the server: %v", err)
		}
	}
	return nil
}

// send sends a request and returns a 2xx response; other statuses become an
// *apiError with the server's message.
func (cl *client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, cl.base.String()+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+cl.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Lormas server at %s: %v", cl.base, unwrapURLError(err))
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return nil, &apiError{Status: resp.StatusCode, Msg: msg}
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// nodeView is the server's node object.
type nodeView struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Description   string          `json:"description"`
	CreatedAt     string          `json:"createdAt"`
	Connected     bool            `json:"connected"`
	LastHeartbeat string          `json:"lastHeartbeat"`
	AgentVersion  string          `json:"agentVersion"`
	Resources     json.RawMessage `json:"resources"`
}

// nodeID resolves --node (an id or a name) to a node id; without one, the
// only node there is.
func (c *cli) nodeID() (string, error) {
	cl, err := c.client()
	if err != nil {
		return "", err
	}
	var nodes []nodeView
	if err := cl.do(c.ctx, "GET", "/api/nodes", nil, &nodes); err != nil {
		return "", err
	}
	if c.node == "" {
		switch len(nodes) {
		case 1:
			return nodes[0].ID, nil
		case 0:
			return "", errors.New("no nodes registered; create one with 'lormasctl node create NAME'")
		}
		return "", usagef("%d nodes are registered: choose one with --node (or LORMAS_NODE)", len(nodes))
	}
	for _, n := range nodes {
		if n.ID == c.node {
			return n.ID, nil
		}
	}
	for _, n := range nodes {
		if n.Name == c.node {
			return n.ID, nil
		}
	}
	return "", fmt.Errorf("no such node: %s", c.node)
}

// command sends a command to the node and returns its result object; an
// error result becomes an *apiError with the agent's message and code.
func (c *cli) command(cmd protocol.Command, result any) error {
	node, err := c.nodeID()
	if err != nil {
		return err
	}
	var res struct {
		Status   protocol.Status `json:"status"`
		Result   json.RawMessage `json:"result"`
		Error    string          `json:"error"`
		Code     protocol.Code   `json:"code"`
		Warnings []string        `json:"warnings"`
	}
	if err := c.api.do(c.ctx, "POST", "/api/nodes/"+url.PathEscape(node)+"/commands", cmd, &res); err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(c.stderr, "WARNING: %s\n", w)
	}
	if res.Status != protocol.StatusSuccess {
		return &apiError{Msg: res.Error, Code: res.Code}
	}
	if result != nil && len(res.Result) > 0 {
		return json.Unmarshal(res.Result, result)
	}
	return nil
}

// containerPath is the API path of a container of the current node.
func (c *cli) containerPath(container, what string) (string, error) {
	node, err := c.nodeID()
	if err != nil {
		return "", err
	}
	return "/api/nodes/" + url.PathEscape(node) + "/containers/" + url.PathEscape(container) + "/" + what, nil
}
