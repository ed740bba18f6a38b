package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func TestRefreshTime(t *testing.T) {
	iat := time.Unix(1000, 0)
	for _, c := range []struct {
		ttl, want time.Duration
	}{
		{time.Hour, 40 * time.Minute},
		{3 * time.Second, 2 * time.Second},
		{2 * time.Second, time.Second},                    // at least 1s before exp
		{500 * time.Millisecond, -500 * time.Millisecond}, // tiny TTL: at once
	} {
		if got := refreshTime(iat, iat.Add(c.ttl)).Sub(iat); got != c.want {
			t.Errorf("TTL %v: refresh %v after iat, want %v", c.ttl, got, c.want)
		}
	}
}

// expiryOf reads a token's exp claim.
func expiryOf(t *testing.T, token string) time.Time {
	t.Helper()
	var c nodeClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil || c.ExpiresAt == nil {
		t.Fatalf("token without exp: %v", err)
	}
	return c.ExpiresAt.Time
}

// Issue 7: with NODE_TOKEN_TTL the session outlived its token. An agent
// without the token_refresh capability is now closed at expiry.
func TestSessionEndsWhenTokenExpires(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"NODE_TOKEN_TTL": "3s"})
	n := h.createNode("short-lived")
	exp := expiryOf(t, n.Token)
	a := h.connect(n.ID, n.Token)
	a.send(protocol.AgentIdentify{NodeName: "short-lived", Version: "seed"}) // no capabilities
	code, reason := a.waitClosed()
	if code != closeTokenRotated || reason != closeReasonExpired {
		t.Errorf("closed with %d %q, want 4001 %q", code, reason, closeReasonExpired)
	}
	if now := time.Now(); now.Before(exp) {
		t.Errorf("closed %v before the token's exp", exp.Sub(now))
	}
	for len(a.frames) > 0 {
		if m, err := protocol.Decode(<-a.frames); err == nil && m.MessageType() == protocol.TypeTokenRefresh {
			t.Errorf("token_refresh sent to an agent without the capability")
		}
	}
	if resp, _ := h.upgradeRequest(t, n.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", resp.StatusCode)
	}
}

// An agent that announces token_refresh gets fresh tokens over its session
// and stays connected past several lifetimes; the token it replaced stays
// valid until its own exp; a rotation revokes both.
func TestTokenRefreshKeepsTheSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"NODE_TOKEN_TTL": "3s"})
	n := h.createNode("refreshed")
	firstExp := expiryOf(t, n.Token)
	a := h.connect(n.ID, n.Token)
	a.send(protocol.AgentIdentify{NodeName: "refreshed", Version: "test", Capabilities: []string{protocol.CapabilityTokenRefresh}})

	var tokens []string
	lastExp := firstExp
	deadline := firstExp.Add(7 * time.Second) // more than three lifetimes in all
	for time.Now().Before(deadline) {
		var m protocol.TokenRefresh
		if err := json.Unmarshal(a.next(), &m); err != nil || m.Type != protocol.TypeTokenRefresh {
			t.Fatalf("frame %+v (%v), want token_refresh", m, err)
		}
		exp := expiryOf(t, m.Token)
		if !exp.After(lastExp) || m.ExpiresAt != exp.UTC().Format(time.RFC3339) {
			t.Fatalf("refreshed token expires %v (expiresAt %q), previous %v: want later, stated", exp, m.ExpiresAt, lastExp)
		}
		if got := time.Until(lastExp); got < 0 {
			t.Errorf("token_refresh arrived %v after the previous token expired", -got)
		}
		lastExp = exp
		tokens = append(tokens, m.Token)
	}
	if !h.srv.hub.connected(n.ID) || len(tokens) < 3 {
		t.Fatalf("after %d refreshes: connected=%v, want connected after three or more", len(tokens), h.srv.hub.connected(n.ID))
	}
	if time.Now().Before(firstExp.Add(6 * time.Second)) {
		t.Fatalf("test ended early")
	}
	h.stillServes(a, n.ID)

	// The newest and the one before are valid (an agent that missed the
	// last message can still connect); older ones are not.
	cur, prev, older := tokens[len(tokens)-1], tokens[len(tokens)-2], n.Token
	for _, c := range []struct {
		name, token string
		valid       bool
	}{{"current", cur, true}, {"previous", prev, true}, {"first (expired)", older, false}} {
		if _, _, err := h.srv.authenticateNode(t.Context(), c.token); (err == nil) != c.valid {
			t.Errorf("%s token: %v, want valid=%v", c.name, err, c.valid)
		}
	}

	// Rotation revokes both, and closes the session.
	h.admin("PATCH", "/api/nodes/"+n.ID+"/token", nil, http.StatusOK)
	if code, reason := a.waitClosed(); code != closeTokenRotated || reason != closeReasonRotated {
		t.Errorf("after rotation: closed %d %q, want 4001 %q", code, reason, closeReasonRotated)
	}
	for _, tok := range []string{cur, prev} {
		if _, _, err := h.srv.authenticateNode(t.Context(), tok); err == nil {
			t.Errorf("a refreshed token is valid after the rotation")
		}
	}
	logs := h.logs.String()
	for _, tok := range tokens {
		if strings.Contains(logs, tok) {
			t.Fatalf("a refreshed token is in the logs")
		}
	}
}
