package server

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/lormas/lormas-agent/internal/server/store"
)

// authenticateNode checks a node token completely before any upgrade: HS256
// signature, exp, that the node exists, and that the token is the node's
// current one (its jti matches the stored token id).
func (srv *Server) authenticateNode(ctx context.Context, token string) (store.Node, nodeClaims, error) {
	claims, err := srv.tokens.verify(token)
	if err != nil {
		return store.Node{}, nodeClaims{}, err
	}
	n, err := srv.store.Node(ctx, claims.NodeID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Node{}, nodeClaims{}, errNodeUnknown
	}
	if err != nil {
		return store.Node{}, nodeClaims{}, err
	}
	if n.TokenID != claims.ID {
		return store.Node{}, nodeClaims{}, errTokenRevoked
	}
	return n, claims, nil
}

// nodeToken returns the token an agent presents: "Authorization: Bearer"
// first, else the seed's ?token= query parameter.
func nodeToken(r *http.Request) string {
	if t, err := bearerToken(r); err == nil {
		return t
	}
	return r.URL.Query().Get("token")
}

// handleSocket is GET /api/ws/nodes: authenticate, then upgrade to the
// agent's WebSocket session.
func (srv *Server) handleSocket(w http.ResponseWriter, r *http.Request) {
	n, claims, err := srv.authenticateNode(r.Context(), nodeToken(r))
	if err != nil {
		switch {
		case errors.Is(err, errTokenMissing), errors.Is(err, errTokenInvalid), errors.Is(err, errTokenExpired),
			errors.Is(err, errTokenRevoked), errors.Is(err, errNodeUnknown):
			srv.log.Info("node token rejected", "reason", err, "remote", r.RemoteAddr)
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
	s := &session{
		srv:      srv,
		nodeID:   n.ID,
		name:     n.Name,
		jti:      claims.ID,
		remote:   r.RemoteAddr,
		conn:     conn,
		log:      srv.log.With("node", n.ID, "node_name", n.Name, "remote", r.RemoteAddr),
		out:      make(chan []byte, outBuffer),
		closeReq: make(chan closeRequest, 1),
		done:     make(chan struct{}),
	}
	conn.Session().Store(sessionKey, s)
	s.armIdleWriteDeadline()
	srv.hub.wg.Add(2)
	go func() {
		defer srv.hub.wg.Done()
		conn.ReadLoop()
	}()
	go s.writeLoop()
}
