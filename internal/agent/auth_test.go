package agent_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// timedToken signs a node token with iat and exp (exp zero: none).
func timedToken(t testing.TB, nodeID, jti string, iat, exp time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"nodeId": nodeID, "sub": nodeID, "name": "node-a", "iat": iat.Unix(), "jti": jti}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("test-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// renewCalls records the RenewExpired hook's calls.
type renewCalls struct {
	mu     sync.Mutex
	tokens []string
}

func (r *renewCalls) hook(_ context.Context, expired string) error {
	r.mu.Lock()
	r.tokens = append(r.tokens, expired)
	r.mu.Unlock()
	return nil
}

func (r *renewCalls) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tokens)
}

// What an administrator did sticks (issue 7): an agent whose node was
// deleted (4003) or whose token was rotated (4001) or refused at the
// upgrade does not renew or re-enroll; it says so once, keeps re-reading
// its token with backoff, and resumes when a new one appears.
func TestRevokedTokenWaitsForTheOperator(t *testing.T) {
	for _, c := range []struct {
		name   string
		code   uint16
		reason string
		cause  string
	}{
		{"node deleted", 4003, "node deleted", "an administrator deleted this node"},
		{"token rotated", 4001, "token rotated", "an administrator rotated this node's token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var renew renewCalls
			h := start(t, nil, setup{opts: func(o *agent.Options) {
				o.RenewExpired = renew.hook
				o.CredentialHint = "write the new token into /state/node-token"
			}})
			h.identified()
			// The server now refuses the old token at the upgrade too.
			h.srv.SetToken("another-token")
			h.srv.CloseConns(c.code, c.reason)
			ctx := waitCtx(t)
			if err := h.srv.WaitUpgrades(ctx, 6); err != nil { // five refused dials after the first
				t.Fatal(err)
			}
			if n := renew.count(); n != 0 {
				t.Errorf("RenewExpired called %d times for a revoked token", n)
			}
			lines := h.logs.entries("server rejected the node token")
			if len(lines) != 1 {
				t.Fatalf("%d error lines, want exactly 1 for the whole streak", len(lines))
			}
			if lines[0]["cause"] != c.cause || !strings.Contains(lines[0]["hint"].(string), "/state/node-token") ||
				!strings.Contains(lines[0]["hint"].(string), "does not enroll again by itself") {
				t.Errorf("log line %v, want cause %q and the operator's hint", lines[0], c.cause)
			}
			// The operator writes a new token: the agent resumes by itself.
			fresh := nodeToken(t, "node-123", "new")
			h.srv.SetToken(fresh)
			h.setToken(fresh)
			h.identified()
		})
	}
}

// The only automatic renewal is for an EXPIRED token: by the close reason
// of the server, or by the token's own exp when the upgrade is refused.
func TestExpiredTokenIsRenewed(t *testing.T) {
	t.Run("closed with 4001 token expired", func(t *testing.T) {
		var renew renewCalls
		var h *harness
		fresh := nodeToken(t, "node-123", "renewed")
		h = start(t, nil, setup{opts: func(o *agent.Options) {
			o.RenewExpired = func(ctx context.Context, expired string) error {
				renew.hook(ctx, expired)
				h.srv.SetToken(fresh)
				h.setToken(fresh)
				return nil
			}
		}, noStart: true})
		first := h.token
		h.run()
		h.identified()
		h.srv.CloseConns(4001, "token expired")
		h.identified()
		if renew.count() != 1 || renew.tokens[0] != first {
			t.Errorf("RenewExpired calls %d, want 1 with the expired token", renew.count())
		}
		ups := h.srv.Upgrades()
		if last := ups[len(ups)-1]; last.Query.Get("token") != fresh {
			t.Errorf("the agent did not dial with the renewed token")
		}
	})
	t.Run("refused at the upgrade with an exp in the past", func(t *testing.T) {
		var renew renewCalls
		expired := timedToken(t, "node-123", "old", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		h := start(t, nil, setup{srvOpts: agenttest.ServerOptions{Token: "the-current-one"}, opts: func(o *agent.Options) {
			o.RenewExpired = renew.hook
		}, noStart: true})
		h.setToken(expired)
		h.run()
		eventually(t, "renewal attempts", func() bool { return renew.count() >= 2 })
		if renew.tokens[0] != expired {
			t.Errorf("RenewExpired got another token")
		}
		if n := len(h.logs.entries("server rejected the node token")); n != 1 {
			t.Errorf("%d lines, want 1 for the streak", n)
		}
	})
	t.Run("without a renewer: waits like a revoked token", func(t *testing.T) {
		expired := timedToken(t, "node-123", "old", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		h := start(t, nil, setup{srvOpts: agenttest.ServerOptions{Token: "the-current-one"}, noStart: true})
		h.setToken(expired)
		h.run()
		if err := h.srv.WaitUpgrades(waitCtx(t), 3); err != nil {
			t.Fatal(err)
		}
		lines := h.logs.entries("server rejected the node token")
		if len(lines) != 1 || lines[0]["cause"] != "the node token expired" {
			t.Errorf("log lines %v, want one naming the expiry", lines)
		}
	})
}

// token_refresh (SPEC 4): the agent announces the capability, keeps the
// fresh token (hook + memory), dials with it next time, never logs it, and
// ignores a token of another node or one that expired.
func TestTokenRefresh(t *testing.T) {
	var mu sync.Mutex
	var stored []string
	h := start(t, nil, setup{opts: func(o *agent.Options) {
		o.TokenRefreshed = func(tok string) error {
			mu.Lock()
			stored = append(stored, tok)
			mu.Unlock()
			return nil
		}
	}, noStart: true})
	h.run()
	id := h.identified()
	if !slices.Contains(id.Capabilities, protocol.CapabilityTokenRefresh) {
		t.Fatalf("capabilities %v lack token_refresh", id.Capabilities)
	}
	now := time.Now()
	other := timedToken(t, "node-999", "x", now, now.Add(time.Hour))
	dead := timedToken(t, "node-123", "y", now.Add(-2*time.Hour), now.Add(-time.Hour))
	fresh := timedToken(t, "node-123", "z", now.Add(time.Second), now.Add(time.Hour))
	h.mu.Lock()
	h.secret = append(h.secret, other, dead, fresh)
	h.mu.Unlock()
	h.send(protocol.TokenRefresh{Token: other})
	h.send(protocol.TokenRefresh{Token: dead})
	h.send(protocol.TokenRefresh{Token: "not a token"})
	h.send(protocol.TokenRefresh{Token: fresh, ExpiresAt: protocol.Timestamp(now.Add(time.Hour))})
	eventually(t, "refreshed token stored", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stored) > 0
	})
	mu.Lock()
	if len(stored) != 1 || stored[0] != fresh {
		t.Errorf("stored %d tokens, want only the fresh one of this node", len(stored))
	}
	mu.Unlock()
	if n := len(h.logs.entries("node token refreshed by the server")); n != 1 {
		t.Errorf("%d refresh log lines, want 1", n)
	}
	// A hostile server repeating tokens cannot make the agent write its
	// state directory or its log again and again: not issued later, ignored.
	for range 500 {
		h.send(protocol.TokenRefresh{Token: fresh})
		h.send(protocol.TokenRefresh{Token: other})
	}
	h.send(protocol.Ping{})
	h.srv.Expect(protocol.TypePong)
	mu.Lock()
	if len(stored) != 1 {
		t.Errorf("stored %d tokens after repeats, want 1", len(stored))
	}
	mu.Unlock()
	if n := len(h.logs.entries("token_refresh ignored")); n != 1 {
		t.Errorf("%d warnings for 1,003 ignored messages, want 1 (rate-limited)", n)
	}
	// The next dial uses the refreshed token though the configured source
	// still returns the old one (NODE_TOKEN: issued earlier, same node).
	h.srv.SetToken(fresh)
	h.srv.CloseConns(1001, "restart")
	h.identified()
	ups := h.srv.Upgrades()
	if last := ups[len(ups)-1]; last.Status != 101 || last.Query.Get("token") != fresh {
		t.Errorf("redial with status %d and another token, want the refreshed one", last.Status)
	}
}

func TestTokenRefreshIgnoredWithoutTheCapability(t *testing.T) {
	h := start(t, nil, setup{})
	id := h.identified()
	if slices.Contains(id.Capabilities, protocol.CapabilityTokenRefresh) {
		t.Errorf("token_refresh announced without a way to keep the token")
	}
	fresh := timedToken(t, "node-123", "z", time.Now().Add(time.Second), time.Now().Add(time.Hour))
	h.mu.Lock()
	h.secret = append(h.secret, fresh)
	h.mu.Unlock()
	h.send(protocol.TokenRefresh{Token: fresh})
	h.srv.CloseConns(1001, "restart")
	h.identified()
	ups := h.srv.Upgrades()
	if last := ups[len(ups)-1]; last.Query.Get("token") == fresh {
		t.Errorf("the agent dialled with a token_refresh it did not ask for")
	}
}

// One identity per run: a token that names another node is not used (its
// containers are labelled with this node's id).
func TestTokenOfAnotherNodeIsNotUsed(t *testing.T) {
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.NodeID = "node-123" }})
	h.identified()
	other := nodeToken(t, "node-999", "other")
	h.srv.SetToken(other)
	h.setToken(other)
	h.srv.CloseConns(1001, "restart")
	eventually(t, "refusal logged", func() bool {
		return len(h.logs.entries("node token not used: it names another node")) > 0
	})
	for _, u := range h.srv.Upgrades() {
		if u.Query.Get("token") == other {
			t.Fatalf("the agent dialled with another node's token")
		}
	}
	// Its own node's token is used again at once.
	own := nodeToken(t, "node-123", "own")
	h.srv.SetToken(own)
	h.setToken(own)
	h.identified()
}

// Issue 7: a numeric nodeId claim made heartbeats say "42" while the
// container label fell back to NODE_ID/NODE_NAME. One parse now: the
// heartbeat carries the same "42" as the value the label is built from.
func TestNumericNodeIDClaim(t *testing.T) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"nodeId": 42, "iat": time.Now().Unix()}).
		SignedString([]byte("test-secret"))
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, nil, setup{srvOpts: agenttest.ServerOptions{Token: tok}, opts: func(o *agent.Options) {
		o.NodeID = "" // derived from the token, as cmd/lormas-agent derives the label
		o.StatusEvents = false
	}, noStart: true})
	h.setToken(tok)
	h.run()
	hb := h.srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
	if hb.NodeID != "42" {
		t.Errorf("heartbeat nodeId %q, want 42", hb.NodeID)
	}
}
