// Package enroll is the agent's client of lormas-server's enrollment
// endpoint: with the cluster-wide enrollment token it registers the node by
// name (or gets a fresh token for the node of that name) and returns the
// node's own token, which the agent then stores and uses.
//
// Wire contract: POST <server>/api/nodes/enroll with
// "Authorization: Bearer <enrollment token>" and {"name": "<node name>"};
// the answer is 201 (new node) or 200 (token re-issued) with
// {"id", "name", "token"}, or an error status with {"error": "..."}.
package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
)

// Path is the server's enrollment endpoint.
const Path = "/api/nodes/enroll"

// ErrTokenRejected is matched (errors.Is) by the error of an enrollment the
// server refused because of the enrollment token (HTTP 401 or 403).
var ErrTokenRejected = errors.New("enrollment token rejected")

// Result is what the server issued.
type Result struct {
	ID    string // node id
	Name  string // node name
	Token string // the node's token (a JWT)
}

// StatusError is an enrollment the server answered with an error status.
// Message is the server's {"error"} sentence, or the start of the body.
type StatusError struct {
	StatusCode int
	Message    string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "no error message"
	}
	if e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden {
		return fmt.Sprintf("%v (HTTP %d: %s)", ErrTokenRejected, e.StatusCode, msg)
	}
	return fmt.Sprintf("server answered HTTP %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), msg)
}

// Is makes a 401 or 403 match ErrTokenRejected.
func (e *StatusError) Is(target error) bool {
	return target == ErrTokenRejected && (e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden)
}

// Temporary reports whether retrying the same request may succeed: server
// errors and rate limiting, not refusals of the request itself.
func (e *StatusError) Temporary() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout
}

// maxResponse bounds the answer read from the server.
const maxResponse = 1 << 20

// defaultTimeout applies when hc is nil.
const defaultTimeout = 30 * time.Second

// Enroll registers nodeName with the server at server (SERVER_URL parsed by
// endpoint.Parse; ws/wss map to http/https) and returns the node token it
// issues. hc nil means a client with a 30-second timeout. The enrollment
// token never appears in an error.
func Enroll(ctx context.Context, hc *http.Client, server *url.URL, enrollmentToken, nodeName string) (Result, error) {
	switch {
	case server == nil:
		return Result{}, errors.New("enroll: no server URL")
	case strings.TrimSpace(enrollmentToken) == "":
		return Result{}, errors.New("enroll: empty enrollment token")
	case nodeName == "":
		return Result{}, errors.New("enroll: empty node name")
	}
	if hc == nil {
		hc = &http.Client{Timeout: defaultTimeout}
	}
	target := endpoint.HTTPURL(server, Path)
	body, err := json.Marshal(struct {
		Name string `json:"name"`
	}{nodeName})
	if err != nil {
		return Result{}, fmt.Errorf("enroll node %q: %w", nodeName, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("enroll node %q: %w", nodeName, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(enrollmentToken))

	resp, err := hc.Do(req)
	if err != nil {
		// *url.Error quotes the URL, which carries no credential: the token
		// is in a header.
		return Result{}, fmt.Errorf("enroll node %q at %s: %w", nodeName, endpoint.Redact(target), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return Result{}, fmt.Errorf("enroll node %q at %s: read answer: %w", nodeName, endpoint.Redact(target), err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return Result{}, fmt.Errorf("enroll node %q at %s: %w", nodeName, endpoint.Redact(target),
			&StatusError{StatusCode: resp.StatusCode, Message: scrub(errorMessage(data), enrollmentToken)})
	}
	var res struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return Result{}, fmt.Errorf("enroll node %q at %s: answer is not the expected JSON: %w", nodeName, endpoint.Redact(target), err)
	}
	if res.ID == "" || res.Token == "" {
		return Result{}, fmt.Errorf("enroll node %q at %s: answer lacks the node id or token", nodeName, endpoint.Redact(target))
	}
	if res.Name == "" {
		res.Name = nodeName
	}
	return Result{ID: res.ID, Name: res.Name, Token: res.Token}, nil
}

// scrub removes the token from a server-provided message, in case a server
// or proxy echoes the request back.
func scrub(msg, token string) string {
	if t := strings.TrimSpace(token); t != "" {
		msg = strings.ReplaceAll(msg, t, "REDACTED")
	}
	return msg
}

// errorMessage extracts {"error": "..."} from an error body, or returns its
// first line (bounded) when the body is something else, e.g. a proxy's page.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
