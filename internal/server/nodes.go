package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/server/store"
)

// Limits of node fields. Names go up to 253 characters, the length of a
// DNS name, because Kubernetes node names (the DaemonSet's NODE_NAME) may be
// that long.
const (
	maxNameLength        = 253
	maxDescriptionLength = 1024
)

// validateName checks a node name: 1..253 characters, no control
// characters, no leading or trailing space.
func validateName(name string) error {
	switch {
	case name == "":
		return badRequest("name is required")
	case !utf8.ValidString(name):
		return badRequest("name must be valid UTF-8")
	case utf8.RuneCountInString(name) > maxNameLength:
		return badRequest("name is %d characters long; at most %d are allowed", utf8.RuneCountInString(name), maxNameLength)
	case strings.TrimSpace(name) != name:
		return badRequest("name must not start or end with white space")
	case strings.ContainsFunc(name, unicode.IsControl):
		return badRequest("name must not contain control characters")
	}
	return nil
}

// nodeView is a node as GET /api/nodes returns it.
type nodeView struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Description   string          `json:"description"`
	CreatedAt     string          `json:"createdAt"`
	Connected     bool            `json:"connected"`
	LastHeartbeat *string         `json:"lastHeartbeat"`
	Resources     json.RawMessage `json:"resources"`
	AgentVersion  *string         `json:"agentVersion"`
	Agent         json.RawMessage `json:"agent,omitempty"`
	TokenIssuedAt string          `json:"tokenIssuedAt"`
}

func (srv *Server) nodeView(n store.Node) nodeView {
	srv.reports.overlay(&n)
	v := nodeView{
		ID: n.ID, Name: n.Name, Description: n.Description,
		CreatedAt:     protocol.Timestamp(n.CreatedAt),
		Connected:     srv.hub.connected(n.ID),
		Resources:     n.Resources,
		Agent:         n.AgentInfo,
		TokenIssuedAt: protocol.Timestamp(n.TokenIssuedAt),
	}
	if !n.LastHeartbeat.IsZero() {
		t := protocol.Timestamp(n.LastHeartbeat)
		v.LastHeartbeat = &t
	}
	if n.AgentInfo != nil {
		v.AgentVersion = &n.AgentVersion
	}
	return v
}

// createdNode is the answer to POST /api/nodes (the seed's shape).
type createdNode struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Token       string `json:"token"`
	CreatedAt   string `json:"createdAt"`
}

func (srv *Server) handleCreateNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if err := srv.decodeBody(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if err := validateName(req.Name); err != nil {
		writeErr(w, err)
		return
	}
	if utf8.RuneCountInString(req.Description) > maxDescriptionLength {
		writeError(w, http.StatusBadRequest, "description is longer than %d characters", maxDescriptionLength)
		return
	}
	id := uuid.NewString()
	tok, err := srv.tokens.issueNew(id, req.Name)
	if err != nil {
		writeErr(w, err)
		return
	}
	n := store.Node{ID: id, Name: req.Name, Description: req.Description,
		CreatedAt: srv.now(), TokenID: tok.jti, TokenIssuedAt: tok.issuedAt}
	if err := srv.store.CreateNode(r.Context(), n); err != nil {
		if errors.Is(err, store.ErrDuplicateName) {
			writeError(w, http.StatusConflict, "a node named %q exists already", req.Name)
			return
		}
		writeErr(w, err)
		return
	}
	srv.log.Info("node created", "node", id, "name", req.Name)
	srv.audit.Info("node token issued", "event", "create", "node", id, "name", req.Name,
		"remote", clientAddr(r), "expiresAt", tok.expiresAtText())
	writeJSON(w, http.StatusCreated, createdNode{ID: id, Name: n.Name, Description: n.Description,
		Token: tok.token, CreatedAt: protocol.Timestamp(n.CreatedAt)})
}

// lookupNode loads the node named by the {id} path value, answering 404
// itself when there is none.
func (srv *Server) lookupNode(w http.ResponseWriter, r *http.Request) (store.Node, bool) {
	id := r.PathValue("id")
	n, err := srv.store.Node(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "node %q not found", id)
		return store.Node{}, false
	}
	if err != nil {
		writeErr(w, err)
		return store.Node{}, false
	}
	return n, true
}

func (srv *Server) handleGetNode(w http.ResponseWriter, r *http.Request) {
	if n, ok := srv.lookupNode(w, r); ok {
		writeJSON(w, http.StatusOK, srv.nodeView(n))
	}
}

func (srv *Server) handleDeleteNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := srv.store.DeleteNode(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, "node %q not found", id)
			return
		}
		writeErr(w, err)
		return
	}
	srv.hub.closeNode(id, closeNodeDeleted, "node deleted")
	srv.reports.forget(id)
	srv.log.Info("node deleted", "node", id)
	w.WriteHeader(http.StatusNoContent)
}

// handleRotateToken issues a new token; the old one (and the one before a
// refresh) is refused from now on and a session that authenticated with it
// is closed (4001 "token rotated").
func (srv *Server) handleRotateToken(w http.ResponseWriter, r *http.Request) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	tok, err := srv.tokens.issueNew(n.ID, n.Name)
	if err != nil {
		writeErr(w, err)
		return
	}
	srv.tokenMu.Lock()
	err = srv.store.SetToken(r.Context(), n.ID, tok.jti, tok.issuedAt)
	if err == nil {
		srv.hub.revoke(n.ID, tok.jti)
	}
	srv.tokenMu.Unlock()
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, "node %q not found", n.ID)
			return
		}
		writeErr(w, err)
		return
	}
	srv.log.Info("node token rotated", "node", n.ID)
	srv.audit.Info("node token issued", "event", "rotate", "node", n.ID, "name", n.Name,
		"remote", clientAddr(r), "expiresAt", tok.expiresAtText())
	writeJSON(w, http.StatusOK, struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}{n.ID, tok.token})
}

func (srv *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if err := srv.store.Ping(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "database: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
	}{"ok"})
}
