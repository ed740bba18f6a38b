package agent

import (
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/nodetoken"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/transport"
)

// RefreshedTokenStore keeps the newest token the server handed over in
// token_refresh apart from the node's credential (see
// Options.RefreshedTokens). Its errors are logged, never the token;
// cmd/lormas-agent uses config.RefreshedTokenFile.
type RefreshedTokenStore interface {
	// Load returns the token kept by an earlier run, "" when none.
	Load() (string, error)
	// Save keeps token, replacing the one kept before.
	Save(token string) error
	// Accepted is called once the server accepted an upgrade with token,
	// which proves it genuine: an agent whose credential is its own
	// (enrolled) makes it that credential.
	Accepted(token string) error
	// Discard forgets the kept token: the server refused it.
	Discard() error
}

// A token from token_refresh is a credential the agent cannot verify (it
// has no key), handed over by a server that may be hostile, or by a man in
// the middle of ws://. So it never replaces the node's credential unseen:
//
//   - it must name this agent's node and have plausible times by this
//     host's clock (nodetoken.CheckRefreshed: iat at most 5 minutes ahead,
//     exp after iat and at most 400 days later), and be issued later than
//     the token held;
//   - it is kept apart (RefreshedTokenStore.Save) and dialled with while
//     nodetoken.Prefer chooses it over the credential (same node, valid,
//     issued later: an operator's rotated token wins);
//   - a dial with it that the server accepts proves it genuine
//     (RefreshedTokenStore.Accepted: an enrolled agent adopts it);
//   - a refusal of it (401/403 at the upgrade, or a close with 4001, 4003
//     or 1008, other than its expiry) drops it (RefreshedTokenStore.Discard)
//     and the next dial uses the credential, so a planted token costs one
//     refused dial and never locks the agent out.

// loadRefreshed reads the token a previous run kept; it is checked like a
// fresh one before every dial.
func (a *Agent) loadRefreshed() {
	st := a.opts.RefreshedTokens
	if st == nil {
		return
	}
	tok, err := st.Load()
	if err != nil {
		a.log.Warn("refreshed node token not read; dialling with the node's own token", "err", err)
		return
	}
	a.mu.Lock()
	a.refreshed = strings.TrimSpace(tok)
	a.mu.Unlock()
}

// handleTokenRefresh keeps a fresh node token the server handed over
// before the current one expires (docs/protocol.md): in memory for the next dial, and
// through Options.RefreshedTokens. The connection stays as it is: the
// server's session follows the new token. The token itself is never
// logged.
//
// A token is kept only when it was issued later than the one the agent
// holds (issue times are whole seconds), so a server cannot make the agent
// write its state directory more than once a second; refusals are logged at
// most once a minute.
func (a *Agent) handleTokenRefresh(m protocol.TokenRefresh) {
	st := a.opts.RefreshedTokens
	if st == nil {
		// Not announced: a server that sends it anyway is ignored.
		a.log.Debug("token_refresh ignored: capability not announced")
		return
	}
	now := time.Now()
	tok := strings.TrimSpace(m.Token)
	c, ok := nodetoken.Parse(tok)
	var why string
	switch {
	case tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		why = "the token is empty or contains whitespace or control characters"
	case !ok:
		why = "the token is not a JWT"
	case c.Expired(now):
		why = "the token has already expired"
	default:
		if err := c.CheckRefreshed(a.currentNodeID(), now); err != nil {
			why = err.Error()
		}
	}
	a.mu.Lock()
	held := a.refreshed
	if held == "" {
		held = a.token
	}
	if why == "" {
		if h, ok := nodetoken.Parse(held); ok && !c.IssuedAt.After(h.IssuedAt) {
			why = "the token was not issued later than the one the agent holds"
		}
	}
	if why == "" {
		a.refreshed = tok
	}
	a.mu.Unlock()
	if why != "" {
		if ok, n := a.refreshLog.Allow(); ok {
			a.log.Warn("token_refresh ignored", "reason", why, "suppressedLogs", n)
		}
		return
	}
	expires := c.ExpiresAt.UTC().Format(time.RFC3339)
	a.storeMu.Lock()
	err := st.Save(tok)
	a.storeMu.Unlock()
	if err != nil {
		a.log.Warn("refreshed node token kept in memory only: storing it failed", "err", err, "expiresAt", expires)
		return
	}
	a.log.Info("node token refreshed by the server", "expiresAt", expires)
}

// refreshAccepted records that the server accepted a dial with the
// refreshed token tok (once per token).
func (a *Agent) refreshAccepted(tok string) {
	a.mu.Lock()
	if a.acceptedRefresh == tok {
		a.mu.Unlock()
		return
	}
	a.acceptedRefresh = tok
	a.mu.Unlock()
	a.storeMu.Lock()
	err := a.opts.RefreshedTokens.Accepted(tok)
	a.storeMu.Unlock()
	if err != nil {
		a.log.Warn("the server accepted the refreshed node token, but keeping it as the node's token failed", "err", err)
		return
	}
	a.log.Info("the server accepted the refreshed node token")
}

// dropRefreshed forgets the refreshed token tok, which the server refused:
// the next dial uses the node's own credential.
func (a *Agent) dropRefreshed(tok string, ae *transport.AuthError) {
	a.mu.Lock()
	if a.refreshed == tok {
		a.refreshed = ""
	}
	a.mu.Unlock()
	a.storeMu.Lock()
	err := a.opts.RefreshedTokens.Discard()
	a.storeMu.Unlock()
	args := []any{"reason", authReason(ae)}
	if err != nil {
		args = append(args, "err", err)
	}
	a.log.Warn("server refused the refreshed node token; dropped it, dialling with the node's own token", args...)
}

// usableRefreshed reports whether tok, a token from token_refresh, may be
// dialled with by an agent running as nodeID: plausible and not expired.
func usableRefreshed(tok, nodeID string, now time.Time) bool {
	c, ok := nodetoken.Parse(tok)
	return ok && c.CheckRefreshed(nodeID, now) == nil && !c.Expired(now)
}
