package server

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/server/store"
)

// authenticateNode checks a node token completely before any upgrade: HS256
// signature, exp, that the node exists, and that the token is the node's
// current one (its jti matches the stored token id) or the one its last
// refresh replaced (valid until its own exp).
func (srv *Server) authenticateNode(ctx context.Context, token string) (store.Node, nodeClaims, error) {
	claims, err := srv.tokens.verify(token)
	if err != nil {
		return store.Node{}, nodeClaims{}, err
	}
	n, err := srv.store.Node(ctx, claims.NodeID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Node{}, claims, errNodeUnknown
	}
	if err != nil {
		return store.Node{}, nodeClaims{}, err
	}
	if !tokenIsValidFor(n, claims.ID) {
		return store.Node{}, claims, errTokenRevoked
	}
	return n, claims, nil
}

// tokenIsValidFor reports whether jti is the node's current token or the
// one its last refresh replaced.
func tokenIsValidFor(n store.Node, jti string) bool {
	return jti != "" && (jti == n.TokenID || jti == n.PrevTokenID)
}

// nodeToken returns the token an agent presents: "Authorization: Bearer"
// first, else the seed's ?token= query parameter.
func nodeToken(r *http.Request) string {
	if t, err := bearerToken(r); err == nil {
		return t
	}
	return r.URL.Query().Get("token")
}

// Reason codes of refused node tokens in the audit log.
func tokenRefusalReason(err error) string {
	switch {
	case errors.Is(err, errTokenMissing):
		return "missing_token"
	case errors.Is(err, errTokenExpired):
		return "expired_token"
	case errors.Is(err, errTokenRevoked):
		return "revoked_token"
	case errors.Is(err, errNodeUnknown):
		return "unknown_node"
	default:
		return "invalid_token"
	}
}

// handleSocket is GET /api/ws/nodes: authenticate, then upgrade to the
// agent's WebSocket session. Refused tokens count against the client
// address's failure budget (429 once spent) and are logged through the
// audit log's aggregation, never one line per request.
//
// The budget gates failures only: the token is checked first (its HS256
// signature and exp, the cheap part, then the node's current token id), so
// a valid current token is never answered 429, however many bad tokens
// came from the same address (a workload on the agent's host behind Docker
// NAT, or anyone behind the same proxy). A bad token while the budget is
// spent costs one HMAC and gets 429; a validly signed but revoked one also
// costs its node lookup.
func (srv *Server) handleSocket(w http.ResponseWriter, r *http.Request) {
	remote := clientAddr(r)
	quietRequestLog(r)
	n, claims, err := srv.authenticateNode(r.Context(), nodeToken(r))
	if err != nil {
		switch {
		case errors.Is(err, errTokenMissing), errors.Is(err, errTokenInvalid), errors.Is(err, errTokenExpired),
			errors.Is(err, errTokenRevoked), errors.Is(err, errNodeUnknown):
			if ok, wait, logNow := srv.limiter.allow(remote); !ok {
				if logNow {
					srv.audit.Warn("node token refused", "reason", "rate_limited", "remote", remote)
				}
				w.Header().Set("Retry-After", retryAfterSeconds(wait))
				writeError(w, http.StatusTooManyRequests, "too many failed authentications from %s; retry in %s s", remote, retryAfterSeconds(wait))
				return
			}
			reason := tokenRefusalReason(err)
			if srv.limiter.fail(remote, reason) {
				// The node id of a token with a valid signature only: an
				// invalid token's claims are the client's invention.
				srv.audit.Warn("node token refused", "reason", reason, "node", claims.NodeID, "remote", remote, "detail", err.Error())
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="lormas-node", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "%v", err)
		default:
			writeErr(w, err)
		}
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeError(w, http.StatusBadRequest, "expected a WebSocket upgrade request")
		return
	}
	conn, err := srv.upgrader.Upgrade(w, r)
	if err != nil {
		// gws has answered the handshake error itself.
		srv.log.Info("websocket upgrade failed", "node", n.ID, "err", err, "remote", r.RemoteAddr)
		return
	}
	if r.Header.Get(protocol.ProbeHeader) != "" {
		// `lormas-agent doctor`: the token and the upgrade path are
		// checked; the node's running session, if any, is left alone.
		_ = conn.WriteClose(1000, []byte(protocol.ProbeCloseReason))
		srv.log.Info("node token probe answered", "node", n.ID, "remote", r.RemoteAddr)
		return
	}
	s := &session{
		srv:        srv,
		nodeID:     n.ID,
		name:       n.Name,
		remote:     r.RemoteAddr,
		conn:       conn,
		out:        make(chan []byte, outBuffer),
		closeReq:   make(chan closeRequest, 1),
		done:       make(chan struct{}),
		identified: make(chan struct{}),
	}
	s.log = sessionLog{s}
	s.setToken(claims.ID, claimTime(claims.IssuedAt), claimTime(claims.ExpiresAt))
	conn.Session().Store(sessionKey, s)
	s.armIdleWriteDeadline()
	if !srv.hub.start(s) {
		_ = conn.WriteClose(closeGoingAway, []byte("server shutting down"))
	}
}
