// Package enroll is the agent's enrollment component: the client of
// lormas-server's enrollment endpoint (Enroll), the retry loop of the
// first enrollment and the renewal of an expired token (Enroller), the
// node's credentials (Credentials: NODE_TOKEN_FILE, NODE_TOKEN or the
// stored token), and the state directory it owns (State: the node token,
// the refreshed token and the node key in STATE_DIR). cmd/lormas-agent only
// wires it to the configuration and the agent.
//
// With the cluster-wide enrollment token the agent registers a NEW node by
// name and gets the node's own token, which it stores and uses. The node's
// Ed25519 key (made at the first enrollment, kept in STATE_DIR) proves the
// node's identity: the server re-issues an EXISTING node's token only to a
// request signed by that node's key, so the enrollment token alone can
// never take over a node.
//
// Wire contract: POST <server>/api/nodes/enroll with
// "Authorization: Bearer <enrollment token>" and protocol.EnrollRequest
// {"name", "publicKey", "timestamp", "signature"} (plus "nodeId" and
// "token" for a renewal of an expired token); the answer is 201 (new node)
// or 200 (token re-issued) with protocol.EnrollResponse {"id", "name",
// "token", "expiresAt"}, or an error status with protocol.ErrorResponse
// {"error": "..."}: 409 when the name exists and the request does not
// prove that node's identity, or the node is connected; 404 when a renewed
// node no longer exists; 429 when the client address failed too often
// (Retry-After).
package enroll

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Path is the server's enrollment endpoint.
const Path = "/api/nodes/enroll"

// ErrTokenRejected is matched (errors.Is) by the error of an enrollment the
// server refused because of the enrollment token (HTTP 401 or 403).
var ErrTokenRejected = errors.New("enrollment token rejected")

// Request is one enrollment.
type Request struct {
	Name string // the node's name (NODE_NAME)
	// Key signs the proof of the node's identity (see Sign); nil sends none
	// (a seed-era request: the node can never be re-issued a token).
	Key ed25519.PrivateKey
	// NodeID and Token make it a renewal of that node's expired token:
	// the server never creates a node for it (protocol.EnrollRequest).
	NodeID string
	Token  string
	// Now is the proof's time; zero means time.Now.
	Now time.Time
}

// Result is what the server issued.
type Result struct {
	ID        string // node id
	Name      string // node name
	Token     string // the node's token (a JWT)
	ExpiresAt string // the token's expiry (RFC 3339), "" when none
	Reissued  bool   // 200: an existing node's token was re-issued
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

// Conflict reports a 409: the name belongs to an existing node that the
// request did not prove to be, or the node is connected.
func (e *StatusError) Conflict() bool { return e.StatusCode == http.StatusConflict }

// Temporary reports whether retrying the same request may succeed: server
// errors and rate limiting, not refusals of the request itself.
func (e *StatusError) Temporary() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout
}

// maxResponse bounds the answer read from the server.
const maxResponse = 1 << 20

// defaultTimeout applies when hc is nil.
const defaultTimeout = 30 * time.Second

// Enroll sends req to the server at server (SERVER_URL parsed by
// endpoint.Parse; ws/wss map to http/https) and returns the node token it
// issues. hc nil means a client with a 30-second timeout. Neither the
// enrollment token nor the node token ever appears in an error.
func Enroll(ctx context.Context, hc *http.Client, server *url.URL, enrollmentToken string, req Request) (Result, error) {
	nodeName := req.Name
	switch {
	case server == nil:
		return Result{}, errors.New("enroll: no server URL")
	case strings.TrimSpace(enrollmentToken) == "":
		return Result{}, errors.New("enroll: empty enrollment token")
	case nodeName == "":
		return Result{}, errors.New("enroll: empty node name")
	case (req.NodeID == "") != (req.Token == ""):
		return Result{}, errors.New("enroll: a renewal needs both the node id and its token")
	case req.NodeID != "" && req.Key == nil:
		return Result{}, errors.New("enroll: a renewal needs the node key")
	}
	if hc == nil {
		hc = &http.Client{Timeout: defaultTimeout}
	}
	target := endpoint.HTTPURL(server, Path)
	wire := protocol.EnrollRequest{Name: nodeName, NodeID: req.NodeID, Token: req.Token}
	if req.Key != nil {
		now := req.Now
		if now.IsZero() {
			now = time.Now()
		}
		p := Sign(req.Key, nodeName, now)
		wire.PublicKey, wire.Timestamp, wire.Signature = p.PublicKey, p.Timestamp, p.Signature
	}
	body, err := json.Marshal(wire)
	if err != nil {
		return Result{}, fmt.Errorf("enroll node %q: %w", nodeName, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("enroll node %q: %w", nodeName, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+strings.TrimSpace(enrollmentToken))

	resp, err := hc.Do(hreq)
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
		msg := scrub(scrub(errorMessage(data), enrollmentToken), req.Token)
		return Result{}, fmt.Errorf("enroll node %q at %s: %w", nodeName, endpoint.Redact(target),
			&StatusError{StatusCode: resp.StatusCode, Message: msg})
	}
	var res protocol.EnrollResponse
	if err := json.Unmarshal(data, &res); err != nil {
		return Result{}, fmt.Errorf("enroll node %q at %s: answer is not the expected JSON: %w", nodeName, endpoint.Redact(target), err)
	}
	if res.ID == "" || res.Token == "" {
		return Result{}, fmt.Errorf("enroll node %q at %s: answer lacks the node id or token", nodeName, endpoint.Redact(target))
	}
	if req.NodeID != "" && res.ID != req.NodeID {
		return Result{}, fmt.Errorf("enroll node %q at %s: renewal of node %q answered with node %q", nodeName, endpoint.Redact(target), req.NodeID, res.ID)
	}
	if res.Name == "" {
		res.Name = nodeName
	}
	return Result{ID: res.ID, Name: res.Name, Token: res.Token, ExpiresAt: res.ExpiresAt,
		Reissued: resp.StatusCode == http.StatusOK}, nil
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
	var e protocol.ErrorResponse
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
