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
	"github.com/lormas/lormas-agent/internal/testsupport"
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
		testsupport.WaitFor(t, "renewal attempts", func() bool { return renew.count() >= 2 })
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

// tokenStore is a RefreshedTokenStore in memory that records its calls.
type tokenStore struct {
	mu       sync.Mutex
	kept     string
	saved    []string
	accepted []string
	discards int
}

func (s *tokenStore) Load() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kept, nil
}

func (s *tokenStore) Save(tok string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = tok
	s.saved = append(s.saved, tok)
	return nil
}

func (s *tokenStore) Accepted(tok string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted = append(s.accepted, tok)
	return nil
}

func (s *tokenStore) Discard() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = ""
	s.discards++
	return nil
}

func (s *tokenStore) state() (saved, accepted []string, discards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.saved), slices.Clone(s.accepted), s.discards
}

// token_refresh (docs/protocol.md): the agent announces the capability, keeps the
// fresh token (store + memory), dials with it next time, reports that the
// server accepted it, never logs it, and ignores a token of another node
// or one that expired.
func TestTokenRefresh(t *testing.T) {
	store := &tokenStore{}
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.RefreshedTokens = store }, noStart: true})
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
	// The agent logs the refresh once it has stored the token.
	testsupport.WaitFor(t, "refreshed token stored and logged", func() bool {
		return len(h.logs.entries("node token refreshed by the server")) > 0
	})
	if saved, _, _ := store.state(); len(saved) != 1 || saved[0] != fresh {
		t.Errorf("stored %d tokens, want only the fresh one of this node", len(saved))
	}
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
	if saved, _, _ := store.state(); len(saved) != 1 {
		t.Errorf("stored %d tokens after repeats, want 1", len(saved))
	}
	if n := len(h.logs.entries("token_refresh ignored")); n != 1 {
		t.Errorf("%d warnings for 1,003 ignored messages, want 1 (rate-limited)", n)
	}
	// The next dial uses the refreshed token though the configured source
	// still returns the old one (NODE_TOKEN: issued earlier, same node),
	// and the store learns that the server accepted it.
	h.srv.SetToken(fresh)
	h.srv.CloseConns(1001, "restart")
	h.identified()
	ups := h.srv.Upgrades()
	if last := ups[len(ups)-1]; last.Status != 101 || last.Query.Get("token") != fresh {
		t.Errorf("redial with status %d and another token, want the refreshed one", last.Status)
	}
	if _, accepted, _ := store.state(); len(accepted) != 1 || accepted[0] != fresh {
		t.Errorf("Accepted called %d times, want once with the refreshed token", len(accepted))
	}
}

// Review M4: the agent cannot check a token's signature, so a hostile
// server (or a man in the middle of ws://) handed it tokens that survived
// recovery: one "issued" in the year 30000 beat every later token,
// including the one an operator writes after a rotation; one naming no
// node was accepted (the identity then fell back to NODE_ID/NODE_NAME at
// the next start). Such tokens are refused now.
func TestTokenRefreshRefusesImplausibleTokens(t *testing.T) {
	store := &tokenStore{}
	h := start(t, nil, setup{opts: func(o *agent.Options) { o.RefreshedTokens = store }})
	h.identified()
	now := time.Now()
	claims := func(c jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("forged"))
		if err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		h.secret = append(h.secret, tok)
		h.mu.Unlock()
		return tok
	}
	year30000 := time.Date(30000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		token  string
		reason string
	}{
		{"year 30000", timedToken(t, "node-123", "a", year30000, year30000.Add(time.Hour)), "ahead of this host's clock"},
		{"10 minutes ahead", timedToken(t, "node-123", "b", now.Add(10*time.Minute), now.Add(time.Hour)), "ahead of this host's clock"},
		{"no node", claims(jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}), "names no node"},
		{"no exp", claims(jwt.MapClaims{"nodeId": "node-123", "iat": now.Add(time.Second).Unix()}), "does not expire"},
		{"401 days", timedToken(t, "node-123", "c", now.Add(time.Second), now.Add(401*24*time.Hour)), "longer than 400 days"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(h.logs.entries("token_refresh ignored"))
			agent.ResetRefreshLog(h.agent) // one warning per case
			h.send(protocol.TokenRefresh{Token: c.token})
			testsupport.WaitFor(t, "refusal logged", func() bool { return len(h.logs.entries("token_refresh ignored")) > before })
			got := h.logs.entries("token_refresh ignored")[before]
			if !strings.Contains(got["reason"].(string), c.reason) {
				t.Errorf("reason %q, want %q", got["reason"], c.reason)
			}
		})
	}
	if saved, _, _ := store.state(); len(saved) != 0 {
		t.Errorf("%d implausible tokens stored", len(saved))
	}
	// A redial still uses the configured token.
	h.srv.CloseConns(1001, "restart")
	h.identified()
	ups := h.srv.Upgrades()
	if last := ups[len(ups)-1]; last.Query.Get("token") != h.token {
		t.Errorf("the agent dialled with a refused token")
	}
}

// Review M4: a plausible planted token (right node, issued a minute
// ahead) is dialled with once; the server refuses it, and the agent drops
// it and dials with its own credential, which the operator may just have
// rotated: it is not locked out, and it does not treat the refusal as a
// revoked credential (no renewal, no "rejected" streak).
func TestRefusedRefreshedTokenIsDropped(t *testing.T) {
	store := &tokenStore{}
	var renew renewCalls
	h := start(t, nil, setup{opts: func(o *agent.Options) {
		o.RefreshedTokens = store
		o.RenewExpired = renew.hook
	}})
	h.identified()
	now := time.Now()
	planted := timedToken(t, "node-123", "planted", now.Add(time.Minute), now.Add(time.Hour))
	h.mu.Lock()
	h.secret = append(h.secret, planted)
	h.mu.Unlock()
	h.send(protocol.TokenRefresh{Token: planted})
	testsupport.WaitFor(t, "planted token kept", func() bool {
		saved, _, _ := store.state()
		return len(saved) == 1
	})
	// The operator rotates the node's token meanwhile (issued now, before
	// the planted token's iat): the server knows only the rotated one.
	rotated := nodeToken(t, "node-123", "rotated")
	h.srv.SetToken(rotated)
	h.setToken(rotated)
	h.srv.CloseConns(1001, "restart")
	h.identified()
	ups := h.srv.Upgrades()
	var refused, accepted []string
	for _, u := range ups[1:] {
		if u.Status == 101 {
			accepted = append(accepted, u.Query.Get("token"))
		} else {
			refused = append(refused, u.Query.Get("token"))
		}
	}
	if len(refused) != 1 || refused[0] != planted || len(accepted) != 1 || accepted[0] != rotated {
		t.Errorf("redials: %d refused (planted: %v), %d accepted (rotated: %v); want the planted token refused once, then the rotated one",
			len(refused), len(refused) == 1 && refused[0] == planted, len(accepted), len(accepted) == 1 && accepted[0] == rotated)
	}
	if _, acc, discards := store.state(); discards != 1 || len(acc) != 0 {
		t.Errorf("Discard called %d times, Accepted %d; want 1 and 0", discards, len(acc))
	}
	if n := len(h.logs.entries("server refused the refreshed node token; dropped it, dialling with the node's own token")); n != 1 {
		t.Errorf("%d lines about the dropped token, want 1", n)
	}
	if n := len(h.logs.entries("server rejected the node token")); n != 0 || renew.count() != 0 {
		t.Errorf("the refusal of the refreshed token was handled as the credential's (%d lines, %d renewals)", n, renew.count())
	}
	// A genuine refresh later is kept again.
	fresh := timedToken(t, "node-123", "fresh", time.Now().Add(time.Second), time.Now().Add(time.Hour))
	h.mu.Lock()
	h.secret = append(h.secret, fresh)
	h.mu.Unlock()
	h.send(protocol.TokenRefresh{Token: fresh})
	testsupport.WaitFor(t, "fresh token kept", func() bool {
		saved, _, _ := store.state()
		return len(saved) == 2 && saved[1] == fresh
	})
}

// A token a previous run kept is checked like a fresh one: a planted one
// from the year 30000 is never dialled with; a plausible one is, first.
func TestRefreshedTokenOfAnEarlierRun(t *testing.T) {
	year30000 := time.Date(30000, 1, 1, 0, 0, 0, 0, time.UTC)
	t.Run("implausible", func(t *testing.T) {
		store := &tokenStore{kept: timedToken(t, "node-123", "planted", year30000, year30000.Add(time.Hour))}
		h := start(t, nil, setup{opts: func(o *agent.Options) {
			o.RefreshedTokens = store
			o.NodeID = "node-123"
		}, noStart: true})
		h.mu.Lock()
		h.secret = append(h.secret, store.kept)
		h.mu.Unlock()
		h.run()
		h.identified()
		if ups := h.srv.Upgrades(); len(ups) != 1 || ups[0].Query.Get("token") != h.token {
			t.Errorf("the first dial did not use the configured token")
		}
	})
	t.Run("plausible", func(t *testing.T) {
		kept := timedToken(t, "node-123", "kept", time.Now().Add(time.Second), time.Now().Add(time.Hour))
		store := &tokenStore{kept: kept}
		h := start(t, nil, setup{srvOpts: agenttest.ServerOptions{Token: kept}, opts: func(o *agent.Options) {
			o.RefreshedTokens = store
			o.NodeID = "node-123"
		}, noStart: true})
		h.mu.Lock()
		h.secret = append(h.secret, kept)
		h.mu.Unlock()
		h.run()
		h.identified()
		if ups := h.srv.Upgrades(); len(ups) != 1 || ups[0].Query.Get("token") != kept {
			t.Errorf("the first dial did not use the kept refreshed token")
		}
		if _, acc, _ := store.state(); len(acc) != 1 {
			t.Errorf("Accepted called %d times, want 1", len(acc))
		}
	})
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
	testsupport.WaitFor(t, "refusal logged", func() bool {
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
