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
func (a *Agent) handleTokenRefresh(m protocol.TokenRefresh) {
	if a.opts.TokenRefreshed == nil {
		// Not announced: a server that sends it anyway is ignored.
		a.log.Debug("token_refresh ignored: capability not announced")
		return
	}
	tok := strings.TrimSpace(m.Token)
	c, ok := nodetoken.Parse(tok)
	switch {
	case tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		a.log.Warn("token_refresh ignored: the token is empty or contains whitespace or control characters")
		return
	case !ok:
		a.log.Warn("token_refresh ignored: the token is not a JWT")
		return
	case c.NodeID != "" && c.NodeID != a.currentNodeID():
		a.log.Warn("token_refresh ignored: the token names another node", "tokenNode", c.NodeID, "nodeId", a.currentNodeID())
		return
	case c.Expired(time.Now()):
		a.log.Warn("token_refresh ignored: the token has already expired", "expiresAt", c.ExpiresAt.UTC().Format(time.RFC3339))
		return
	}
	a.mu.Lock()
	a.refreshed = tok
	a.mu.Unlock()
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
