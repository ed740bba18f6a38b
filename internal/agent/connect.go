package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/nodetoken"
	"github.com/lormas/lormas-agent/internal/transport"
)

// errOtherNode refuses to dial with a token that names another node than
// the one this agent runs as (see Options.NodeID).
var errOtherNode = errors.New("the node token names another node than the one this agent runs as")

// reasonTokenExpired is the close reason lormas-server sends with 4001 when
// a session's token expires.
const reasonTokenExpired = "token expired"

// authRemindEvery is how often a refused token is logged again while the
// agent keeps waiting for a new credential.
const authRemindEvery = 10 * time.Minute

// closeReplaced is the close code lormas-server sends to a session that a
// newer connection of the same node replaced.
const closeReplaced = 4000

// replacedInARow is how many sessions in a row must end replaced before the
// agent says another agent uses its token: one replacement happens when a
// connection was half-open or an old tool checked the token; two in a row
// mean two agents take turns with one node's token (a DaemonSet given one
// Secret, a copied state directory).
const replacedInARow = 2

// replacedHint is the fix for two agents sharing a node token.
const replacedHint = "lormas-server keeps one session per node, so two agents with the same node token replace each other (close 4000) again and again: " +
	"give every agent its own node (enrollment: ENROLLMENT_TOKEN_FILE, each under its own NODE_NAME; or one node token per host) and stop the other agent or remove its copy of this token"

// connectLoop dials, runs a session, and redials with backoff until ctx
// ends (nil) or the reconnect attempts are exhausted.
func (a *Agent) connectLoop(ctx context.Context) error {
	b := backoff.New(a.opts.ReconnectDelay, a.opts.ReconnectMaxDelay,
		backoff.WithStableAfter(a.tm.stableAfter), backoff.WithClock(a.tm.clock))
	authStreak := false
	remind := logging.Every(authRemindEvery)
	otherNode := logging.Every(authRemindEvery)
	replaced, replacedLog := 0, logging.Every(authRemindEvery)
	for first := true; ; first = false {
		if ctx.Err() != nil {
			return nil
		}
		if !first {
			if limit := a.opts.MaxReconnectAttempts; limit > 0 && b.Attempt() >= limit {
				a.log.Error("giving up: maximum reconnect attempts reached", "attempts", limit)
				return fmt.Errorf("%w (%d)", ErrMaxReconnects, limit)
			}
			d := b.Next()
			a.log.Info("reconnecting", "in", d.Round(time.Millisecond), "attempt", b.Attempt())
			if b.WaitFor(ctx, d) != nil {
				return nil
			}
			a.obs.Reconnect()
		}

		r := a.connectOnce(ctx, b)
		if ctx.Err() != nil {
			return nil
		}
		if r.tokenChanged {
			authStreak = false
		}
		if endedReplaced(r) {
			replaced++
		} else {
			replaced = 0
		}
		var ae *transport.AuthError
		var ue *transport.UpgradeError
		switch {
		case errors.As(r.err, &ae) && r.refreshed && classifyAuth(ae, r.token, time.Now()) != causeExpired:
			// A token from token_refresh the server does not know (planted
			// by a hostile server or a man in the middle, or revoked since):
			// forget it; the next dial uses the credential.
			a.dropRefreshed(r.token, ae)
		case errors.Is(r.err, errOtherNode):
			authStreak = false
			if ok, n := otherNode.Allow(); ok {
				a.log.Error("node token not used: it names another node", "err", r.err, "suppressedLogs", n,
					"hint", "this agent's heartbeats and container labels (lormas.node) use its node id; write a token of that node, or restart the agent to run as the other node")
			}
		case errors.As(r.err, &ae):
			a.handleAuthFailure(ctx, ae, r.token, &authStreak, remind)
		case r.connected:
			authStreak = false
			a.log.Warn("disconnected", "err", r.err, "up", r.up.Round(time.Millisecond))
			if replaced >= replacedInARow {
				if ok, n := replacedLog.Allow(); ok {
					a.log.Error("another agent is using this node's token", "replacedInARow", replaced,
						"suppressedLogs", n, "hint", replacedHint)
				}
			}
		case errors.As(r.err, &ue) && ue.Status == http.StatusNotFound:
			authStreak = false
			a.log.Warn("connection failed", "err", r.err, "hint", endpoint.NotFoundHint(a.server, ue.URL))
		default:
			authStreak = false
			a.log.Warn("connection failed", "err", r.err)
		}
	}
}

// endedReplaced reports whether a session ended because the server
// replaced it with a newer connection of the same node.
func endedReplaced(r attempt) bool {
	var ce *transport.CloseError
	return r.connected && errors.As(r.err, &ce) && !ce.Local && ce.Code == closeReplaced
}

// authCause is why the server refused a token, as far as the agent can tell.
type authCause string

const (
	causeExpired authCause = "the node token expired"
	causeDeleted authCause = "an administrator deleted this node"
	causeRotated authCause = "an administrator rotated this node's token"
	causeRefused authCause = "the server refused the node token (revoked or rotated, or its node deleted)"
)

// classifyAuth tells an expired token (the only case the agent recovers
// from by itself) from one an administrator revoked. The close code of a
// live session says which; a refusal at the upgrade (HTTP 401) does not, so
// the token's own exp decides there.
func classifyAuth(ae *transport.AuthError, token string, now time.Time) authCause {
	switch {
	case ae.CloseCode == transport.CloseForbidden:
		return causeDeleted
	case ae.CloseCode == transport.CloseUnauthorized && strings.EqualFold(strings.TrimSpace(ae.Reason), reasonTokenExpired):
		return causeExpired
	case nodetoken.Expired(token, now):
		return causeExpired
	case ae.CloseCode == transport.CloseUnauthorized:
		return causeRotated
	default:
		return causeRefused
	}
}

// handleAuthFailure logs a refused token once per streak (then every
// authRemindEvery) with what the operator can do, and renews an expired
// token when the agent can. It never re-enrolls for a revoked token or a
// deleted node: the agent keeps re-reading its token source with backoff
// and resumes when a new credential appears.
func (a *Agent) handleAuthFailure(ctx context.Context, ae *transport.AuthError, token string, streak *bool, remind *logging.Limiter) {
	cause := classifyAuth(ae, token, time.Now())
	if cause == causeExpired && a.opts.RenewExpired != nil {
		if !*streak {
			a.log.Warn("server rejected the node token", "reason", authReason(ae), "cause", string(cause),
				"action", "renewing the token with the node's key")
			*streak = true
		}
		if err := a.opts.RenewExpired(ctx, token); err != nil && ctx.Err() == nil {
			if ok, n := remind.Allow(); ok {
				a.log.Error("could not renew the expired node token", "err", err, "suppressedLogs", n)
			}
			return
		}
		// The renewed credential is newer than any refreshed token, which
		// the renewal may have used up; an expired one serves no more.
		a.mu.Lock()
		if nodetoken.Expired(a.refreshed, time.Now()) {
			a.refreshed = ""
		}
		a.mu.Unlock()
		return
	}
	hint := a.opts.CredentialHint
	if hint == "" {
		hint = "check NODE_TOKEN or NODE_TOKEN_FILE"
	}
	if !*streak {
		*streak = true
		remind.Allow() // the first line counts as this period's line
		a.log.Error("server rejected the node token", "reason", authReason(ae), "cause", string(cause),
			"hint", hint+"; the agent does not enroll again by itself, re-reads its token before every dial (with backoff) and resumes when a new one appears")
		return
	}
	if ok, n := remind.Allow(); ok {
		a.log.Warn("still waiting for a new node token", "reason", authReason(ae), "cause", string(cause),
			"hint", hint, "refusedSinceLastLog", n)
	} else {
		a.log.Debug("server rejected the node token again", "reason", authReason(ae))
	}
}

// attempt is the outcome of one dial.
type attempt struct {
	err          error         // why it failed or ended
	connected    bool          // the upgrade succeeded
	up           time.Duration // how long the connection lasted
	tokenChanged bool          // the token differs from the previous dial's
	token        string        // the token dialled with
	refreshed    bool          // token is the one from token_refresh, not the credential
}

func authReason(e *transport.AuthError) string {
	if e.Status != 0 {
		return fmt.Sprintf("HTTP %d %s at the WebSocket upgrade", e.Status, e.Reason)
	}
	if e.Reason != "" {
		return fmt.Sprintf("closed with code %d: %s", e.CloseCode, e.Reason)
	}
	return fmt.Sprintf("closed with code %d", e.CloseCode)
}

// dialToken is the token for the next dial: the token source's (the
// node's credential), or the newest token received in token_refresh when
// that one is preferable (plausible for this node, issued later, not
// expired: see refresh.go); fromRefresh says which. When the source fails,
// a usable refreshed token still lets the agent connect.
func (a *Agent) dialToken() (token string, fromRefresh bool, err error) {
	src, err := a.opts.Token()
	src = strings.TrimSpace(src)
	a.mu.Lock()
	refreshed, nodeID := a.refreshed, a.nodeID
	a.mu.Unlock()
	now := time.Now()
	usable := refreshed != "" && usableRefreshed(refreshed, nodeID, now)
	if err != nil || src == "" {
		if usable {
			return refreshed, true, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("read node token: %w", err)
		}
		return "", false, errors.New("read node token: the token is empty")
	}
	if usable && refreshed != src && nodetoken.Prefer(src, refreshed, now) == refreshed {
		return refreshed, true, nil
	}
	return src, false, nil
}

// connectOnce reads the token, dials and runs one session to its end.
func (a *Agent) connectOnce(ctx context.Context, b *backoff.Backoff) attempt {
	token, fromRefresh, err := a.dialToken()
	if err != nil {
		return attempt{err: err}
	}
	changed, err := a.setToken(token)
	if err != nil {
		return attempt{err: err, tokenChanged: changed, token: token}
	}

	tlsCfg, err := tlsTemplate(&a.opts)
	if err != nil {
		return attempt{err: fmt.Errorf("TLS configuration: %w", err), tokenChanged: changed, token: token}
	}
	if a.opts.TLSInsecureSkipVerify {
		a.log.Warn("TLS certificate verification is disabled (TLS_INSECURE_SKIP_VERIFY=true): the server is not authenticated")
	}
	a.log.Debug("dialing", "url", endpoint.Redact(transport.SocketURL(a.server, token, !a.opts.TokenHeaderOnly)))
	conn, err := transport.Dial(ctx, transport.Config{
		Server:          a.server,
		Token:           token,
		TokenHeaderOnly: a.opts.TokenHeaderOnly,
		Version:         a.opts.Version,
		TLS:             tlsCfg,
		Proxy:           a.tm.proxy,
		MaxMessageBytes: a.opts.MaxMessageBytes,
		PingInterval:    a.tm.pingInterval,
		ReadTimeout:     a.tm.readTimeout,
		WriteTimeout:    a.tm.writeTimeout,
		Logger:          a.opts.Logger.With("component", "transport"),
	})
	if err != nil {
		return attempt{err: err, tokenChanged: changed, token: token, refreshed: fromRefresh}
	}
	if fromRefresh {
		a.refreshAccepted(token)
	}
	start := a.tm.clock.Now()
	b.MarkConnected(start)
	err = a.runSession(ctx, conn)
	end := a.tm.clock.Now()
	if b.MarkDisconnected(end) {
		a.log.Debug("connection was stable: backoff reset")
	}
	return attempt{err: err, connected: true, up: end.Sub(start), tokenChanged: changed, token: token, refreshed: fromRefresh}
}

// setToken records the token of this dial; it reports whether it changed
// (not on the first dial). The first token fixes the node id when
// Options.NodeID is empty; a token naming another node is refused.
func (a *Agent) setToken(token string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if token == a.token {
		return false, nil
	}
	if a.nodeID == "" {
		a.nodeID = deriveNodeID(token, "", a.opts.NodeName)
	}
	if id := nodeIDFromToken(token); id != "" && id != a.nodeID {
		return false, fmt.Errorf("%w: the token is for node %q, this agent runs as node %q", errOtherNode, id, a.nodeID)
	}
	first := a.token == ""
	a.token = token
	if !first {
		a.log.Info("node token changed", "nodeId", a.nodeID)
	}
	return !first, nil
}
