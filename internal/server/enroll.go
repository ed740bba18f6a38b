package server

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/server/store"
)

// Enrollment (docs/protocol.md). Holding the enrollment token lets a machine
// become a NEW node; it never lets anyone obtain, replace or revoke the
// credential of an existing node, nor knock a connected agent off:
//
//   - a new name creates a node; a request with a publicKey and a valid
//     proof stores the key with the node;
//   - an existing name is answered 409 unless the request is signed by the
//     key stored with that node (admin-created nodes and nodes enrolled
//     without a key have none: their name can never be enrolled), with a
//     timestamp within ±5 minutes of the server's clock and later than the
//     last proof accepted for the node (no replay); even then a CONNECTED
//     node is not re-issued (409 "node is connected");
//   - a renewal (nodeId and token set) re-issues only that node's token and
//     only when the token presented is the node's current or previous one:
//     it never creates a node (a deleted node stays deleted, 404) and never
//     undoes a rotation.
//
// Every issued token and every refusal is an audit line (refusals through
// the failure limiter's aggregation); refusals count against the client
// address's failure budget.

// enrollRefusal is a refused enrollment: the answer, and the audit line.
type enrollRefusal struct {
	status int
	reason string // short code for the audit log
	node   string // the existing node concerned, if any
	msg    string // the sentence answered
}

func (e *enrollRefusal) Error() string { return e.msg }

func refuse(status int, reason, node, format string, args ...any) *enrollRefusal {
	return &enrollRefusal{status: status, reason: reason, node: node, msg: fmt.Sprintf(format, args...)}
}

// enrollProof is a decoded, signature-checked proof.
type enrollProof struct {
	publicKey string // as sent (standard base64), compared with the stored one
	timestamp int64
	valid     bool // the signature verifies with publicKey
}

// handleEnroll is POST /api/nodes/enroll.
//
// The failure budget gates requests without the enrollment token only:
// bad tokens from a neighbour behind the same address (a workload behind
// Docker NAT, anyone behind the same proxy) never lock out a holder of the
// right one, renewals included. Refusals of requests that carry the right
// token still count against the budget and are aggregated in the log.
func (srv *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	remote := clientAddr(r)
	quietRequestLog(r) // every outcome has its audit line or summary
	if !srv.hasEnrollmentToken(r) {
		if ok, wait, logNow := srv.limiter.allow(remote); !ok {
			if logNow {
				srv.audit.Warn("enrollment refused", "reason", "rate_limited", "remote", remote)
			}
			w.Header().Set("Retry-After", retryAfterSeconds(wait))
			writeError(w, http.StatusTooManyRequests, "too many failed enrollments from %s; retry in %s s", remote, retryAfterSeconds(wait))
			return
		}
	}
	srv.answerEnrollment(w, r, remote)
}

// hasEnrollmentToken reports whether r carries the enrollment token
// (constant-time comparison of hashes).
func (srv *Server) hasEnrollmentToken(r *http.Request) bool {
	token, err := bearerToken(r)
	return err == nil && hashMatches(token, srv.creds.enrollHash)
}

// answerEnrollment runs the enrollment and answers it; refusals count
// against the address's failure budget.
func (srv *Server) answerEnrollment(w http.ResponseWriter, r *http.Request, remote string) {
	var req protocol.EnrollRequest
	res, status, err := srv.enroll(w, r, remote, &req)
	if err != nil {
		var rf *enrollRefusal
		if !errors.As(err, &rf) {
			writeErr(w, err) // a server fault: not the client's failure
			return
		}
		if srv.limiter.fail(remote, rf.reason) {
			srv.audit.Warn("enrollment refused", "reason", rf.reason, "name", clip(req.Name), "node", rf.node,
				"remote", remote, "detail", clip(rf.msg))
		}
		if rf.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lormas-enroll", error="invalid_token"`)
		}
		writeError(w, rf.status, "%s", rf.msg)
		return
	}
	writeJSON(w, status, res)
}

// auditClip bounds what a client's request puts into an audit line (an
// unvalidated name, an unknown field's name in an error): a body may be up
// to MAX_BODY_BYTES.
const auditClip = 300

func clip(s string) string {
	if len(s) <= auditClip {
		return s
	}
	return strings.ToValidUTF8(s[:auditClip], "") + "…"
}

// enroll authenticates and decodes the request into req and issues the
// token; an *enrollRefusal for every refusal.
func (srv *Server) enroll(w http.ResponseWriter, r *http.Request, remote string, req *protocol.EnrollRequest) (protocol.EnrollResponse, int, error) {
	token, err := bearerToken(r)
	if err != nil {
		return protocol.EnrollResponse{}, 0, refuse(http.StatusUnauthorized, "missing_enrollment_token", "", "%v", err)
	}
	if !hashMatches(token, srv.creds.enrollHash) {
		return protocol.EnrollResponse{}, 0, refuse(http.StatusUnauthorized, "bad_enrollment_token", "", "invalid enrollment token")
	}
	if err := srv.decodeBody(w, r, req); err != nil {
		status := http.StatusBadRequest
		var he *httpError
		if errors.As(err, &he) {
			status = he.status
		}
		return protocol.EnrollResponse{}, 0, refuse(status, "bad_request", "", "%v", err)
	}
	if err := validateName(req.Name); err != nil {
		return protocol.EnrollResponse{}, 0, refuse(http.StatusBadRequest, "bad_request", "", "%v", err)
	}
	proof, rf := decodeProof(req)
	if rf != nil {
		return protocol.EnrollResponse{}, 0, rf
	}

	ctx := r.Context()
	srv.tokenMu.Lock()
	defer srv.tokenMu.Unlock()
	var n store.Node
	if req.NodeID != "" {
		if n, err = srv.renewable(ctx, req); err != nil {
			return protocol.EnrollResponse{}, 0, err
		}
	} else {
		n, err = srv.store.NodeByName(ctx, req.Name)
		if errors.Is(err, store.ErrNotFound) {
			return srv.enrollNew(ctx, remote, req, proof)
		}
		if err != nil {
			return protocol.EnrollResponse{}, 0, err
		}
	}
	if rf := srv.checkProof(n, req, proof); rf != nil {
		return protocol.EnrollResponse{}, 0, rf
	}
	// Checked after the key (only the node's own key learns that it is
	// connected) and before the replay guard, so a copy of the key gets
	// this answer whenever the node is connected.
	if srv.hub.connected(n.ID) {
		return protocol.EnrollResponse{}, 0, refuse(http.StatusConflict, "connected", n.ID,
			"node %q is connected; an enrollment never replaces a connected agent's credential", n.Name)
	}
	if proof.timestamp <= n.LastProofAt {
		return protocol.EnrollResponse{}, 0, refuse(http.StatusConflict, "replayed_proof", n.ID,
			"proof for node %q is not later than the last one accepted (replayed?)", n.Name)
	}
	tok, err := srv.tokens.issueNew(n.ID, n.Name)
	if err != nil {
		return protocol.EnrollResponse{}, 0, err
	}
	err = srv.store.Reissue(ctx, n.ID, proof.publicKey, proof.timestamp, tok.jti, tok.issuedAt)
	switch {
	case errors.Is(err, store.ErrStaleProof):
		return protocol.EnrollResponse{}, 0, refuse(http.StatusConflict, "replayed_proof", n.ID,
			"proof for node %q is not later than the last one accepted (replayed?)", n.Name)
	case errors.Is(err, store.ErrNotFound):
		return protocol.EnrollResponse{}, 0, refuse(http.StatusNotFound, "unknown_node", n.ID, "node %q no longer exists", n.Name)
	case err != nil:
		return protocol.EnrollResponse{}, 0, err
	}
	// No session uses the new token; one that attached meanwhile ran on a
	// token revoked now.
	srv.hub.revoke(n.ID, tok.jti)
	event := "reenroll"
	if req.NodeID != "" {
		event = "renew"
	}
	srv.audit.Info("node token issued", "event", event, "node", n.ID, "name", n.Name, "remote", remote,
		"expiresAt", tok.expiresAtText())
	return protocol.EnrollResponse{ID: n.ID, Name: n.Name, Token: tok.token, ExpiresAt: tok.expiresAtText()}, http.StatusOK, nil
}

// enrollNew creates the node req names, with its key when the request
// carries a valid proof.
func (srv *Server) enrollNew(ctx context.Context, remote string, req *protocol.EnrollRequest, proof enrollProof) (protocol.EnrollResponse, int, error) {
	if req.PublicKey != "" {
		if !proof.valid {
			return protocol.EnrollResponse{}, 0, refuse(http.StatusBadRequest, "bad_signature", "",
				"signature does not verify with publicKey")
		}
		if rf := srv.checkTimestamp(proof, ""); rf != nil {
			return protocol.EnrollResponse{}, 0, rf
		}
	}
	id := uuid.NewString()
	tok, err := srv.tokens.issueNew(id, req.Name)
	if err != nil {
		return protocol.EnrollResponse{}, 0, err
	}
	n := store.Node{ID: id, Name: req.Name, CreatedAt: srv.now(), TokenID: tok.jti, TokenIssuedAt: tok.issuedAt}
	if req.PublicKey != "" {
		n.PublicKey, n.LastProofAt = proof.publicKey, proof.timestamp
	}
	if err := srv.store.CreateNode(ctx, n); err != nil {
		if errors.Is(err, store.ErrDuplicateName) { // cannot happen under tokenMu; be safe
			return protocol.EnrollResponse{}, 0, refuse(http.StatusConflict, "name_taken", "", "a node named %q already exists", req.Name)
		}
		return protocol.EnrollResponse{}, 0, err
	}
	srv.log.Info("node enrolled", "node", id, "name", n.Name, "with_key", n.PublicKey != "")
	srv.audit.Info("node token issued", "event", "enroll", "node", id, "name", n.Name, "remote", remote,
		"key", n.PublicKey != "", "expiresAt", tok.expiresAtText())
	return protocol.EnrollResponse{ID: id, Name: n.Name, Token: tok.token, ExpiresAt: tok.expiresAtText()}, http.StatusCreated, nil
}

// renewable loads the node a renewal names and checks the token presented
// is its current or previous one (signature checked, expiry not).
func (srv *Server) renewable(ctx context.Context, req *protocol.EnrollRequest) (store.Node, error) {
	if req.Token == "" || req.PublicKey == "" {
		return store.Node{}, refuse(http.StatusBadRequest, "bad_proof", req.NodeID,
			"a renewal (nodeId) needs the node's token and a proof (publicKey, timestamp, signature)")
	}
	claims, err := srv.tokens.verifySignature(req.Token)
	if err != nil || claims.NodeID != req.NodeID {
		return store.Node{}, refuse(http.StatusBadRequest, "bad_renewal_token", req.NodeID,
			"token is not a token of node %q issued by this server", req.NodeID)
	}
	n, err := srv.store.Node(ctx, req.NodeID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Node{}, refuse(http.StatusNotFound, "unknown_node", req.NodeID,
			"node %q does not exist (an administrator deleted it?); a renewal never creates a node. To enroll this machine as a NEW node, remove the agent's STATE_DIR/node-token and STATE_DIR/node-key and restart it", req.NodeID)
	}
	if err != nil {
		return store.Node{}, err
	}
	if n.Name != req.Name {
		return store.Node{}, refuse(http.StatusConflict, "name_mismatch", n.ID,
			"node %q is named %q, not %q", n.ID, n.Name, req.Name)
	}
	if !tokenIsValidFor(n, claims.ID) {
		return store.Node{}, refuse(http.StatusConflict, "revoked_token", n.ID,
			"the token of node %q was rotated or re-issued since this one; a renewal does not undo that: give the agent the node's new token", n.Name)
	}
	return n, nil
}

// checkProof checks that req proves to be node n: signed by n's key, in
// time. (The replay guard follows the connected check.)
func (srv *Server) checkProof(n store.Node, req *protocol.EnrollRequest, proof enrollProof) *enrollRefusal {
	switch {
	case req.PublicKey == "":
		return refuse(http.StatusConflict, "name_taken", n.ID,
			"a node named %q already exists; enrollment creates new nodes; an existing node's token is re-issued only to its own agent, which proves its identity with the key it made at its first enrollment. Use another NODE_NAME, or have an administrator delete the node (DELETE /api/nodes/{id}) or issue its token (PATCH /api/nodes/{id}/token)", n.Name)
	case n.PublicKey == "":
		return refuse(http.StatusConflict, "node_without_key", n.ID,
			"a node named %q already exists and has no enrollment key (created by an administrator, or enrolled without one): its name cannot be enrolled. Give the agent the node's token (PATCH /api/nodes/{id}/token) or use another NODE_NAME", n.Name)
	case subtle.ConstantTimeCompare([]byte(n.PublicKey), []byte(proof.publicKey)) != 1:
		return refuse(http.StatusConflict, "key_mismatch", n.ID,
			"a node named %q already exists and the proof is not signed by its key", n.Name)
	case !proof.valid:
		return refuse(http.StatusConflict, "bad_signature", n.ID,
			"the proof for node %q does not verify with its key", n.Name)
	}
	return srv.checkTimestamp(proof, n.ID)
}

// checkTimestamp refuses a proof more than the window away from the clock.
func (srv *Server) checkTimestamp(proof enrollProof, node string) *enrollRefusal {
	now := srv.now().Unix()
	if d := proof.timestamp - now; d > protocol.EnrollProofWindowSeconds || d < -protocol.EnrollProofWindowSeconds {
		return refuse(http.StatusBadRequest, "stale_proof", node,
			"proof timestamp is %s away from the server's clock (at most ±%s); check the agent's clock",
			(time.Duration(d) * time.Second).String(), (protocol.EnrollProofWindowSeconds * time.Second).String())
	}
	return nil
}

// decodeProof decodes the proof fields and checks the signature with the
// key the request names (whose relation to a node is checked later).
func decodeProof(req *protocol.EnrollRequest) (enrollProof, *enrollRefusal) {
	if req.PublicKey == "" && req.Signature == "" && req.Timestamp == 0 {
		return enrollProof{}, nil
	}
	if req.PublicKey == "" || req.Signature == "" || req.Timestamp <= 0 {
		return enrollProof{}, refuse(http.StatusBadRequest, "bad_proof", "",
			"publicKey, timestamp and signature go together: all three or none")
	}
	pub, err := base64.StdEncoding.DecodeString(req.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return enrollProof{}, refuse(http.StatusBadRequest, "bad_proof", "",
			"publicKey must be a %d-byte Ed25519 public key in standard base64", ed25519.PublicKeySize)
	}
	sig, err := base64.StdEncoding.DecodeString(req.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return enrollProof{}, refuse(http.StatusBadRequest, "bad_proof", "",
			"signature must be a %d-byte Ed25519 signature in standard base64", ed25519.SignatureSize)
	}
	// The key is compared with the stored one as sent; a non-canonical
	// encoding of the same key simply does not match.
	valid := ed25519.Verify(pub, protocol.EnrollProofMessage(req.Name, req.PublicKey, req.Timestamp), sig)
	return enrollProof{publicKey: req.PublicKey, timestamp: req.Timestamp, valid: valid}, nil
}
