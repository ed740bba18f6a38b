package agent

import (
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/nodetoken"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// handleTokenRefresh keeps a fresh node token the server handed over
// before the current one expires (SPEC 4): in memory for the next dial, and
// through Options.TokenRefreshed (STATE_DIR/node-token). The connection
// stays as it is: the server's session follows the new token. The token
// itself is never logged.
//
// A token is kept only when it was issued later than the one the agent
// holds (issue times are whole seconds), so a server cannot make the agent
// write its state directory more than once a second; refusals are logged at
// most once a minute.
func (a *Agent) handleTokenRefresh(m protocol.TokenRefresh) {
	if a.opts.TokenRefreshed == nil {
		// Not announced: a server that sends it anyway is ignored.
		a.log.Debug("token_refresh ignored: capability not announced")
		return
	}
	tok := strings.TrimSpace(m.Token)
	c, ok := nodetoken.Parse(tok)
	var why string
	switch {
	case tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		why = "the token is empty or contains whitespace or control characters"
	case !ok:
		why = "the token is not a JWT"
	case c.NodeID != "" && c.NodeID != a.currentNodeID():
		why = "the token names another node (" + c.NodeID + ")"
	case c.Expired(time.Now()):
		why = "the token has already expired"
	case c.IssuedAt.IsZero():
		why = "the token has no issue time"
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
		if ok, n := a.refreshLog.allow(); ok {
			a.log.Warn("token_refresh ignored", "reason", why, "suppressedLogs", n)
		}
		return
	}
	expires := m.ExpiresAt
	if !c.ExpiresAt.IsZero() {
		expires = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if err := a.opts.TokenRefreshed(tok); err != nil {
		a.log.Warn("refreshed node token kept in memory only: storing it failed", "err", err, "expiresAt", expires)
		return
	}
	a.log.Info("node token refreshed by the server", "expiresAt", expires)
}
