package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"
)

// Console tickets: a browser cannot put the admin token on a WebSocket or
// an EventSource (neither takes headers), so an operator's page asks for a
// ticket with the admin token (POST .../tickets) and opens the console with
// ?ticket=. A ticket is 256 random bits, valid once, for ticketTTL, for one
// action (exec, attach or stats, named in the request) on one container of
// one node: a ticket minted for a stats graph or a read-only console view
// cannot open a root shell. The server keeps only its SHA-256, compares in
// constant time, and never logs it (request logs carry no query strings).

const (
	ticketTTL  = 30 * time.Second
	maxTickets = 1000 // outstanding; beyond, issuing answers 429
)

var errTooManyTickets = errors.New("too many console tickets outstanding; use or let some expire first")

// Ticket actions: the console endpoint a ticket opens.
const (
	ticketExec   = "exec"
	ticketAttach = "attach"
	ticketStats  = "stats"
)

// ticketRequest is the body of POST .../tickets.
type ticketRequest struct {
	Action string `json:"action"`
}

type ticketStore struct {
	mu    sync.Mutex
	items []ticket
}

type ticket struct {
	hash                    [sha256.Size]byte
	node, container, action string
	expires                 time.Time
}

// issue returns a new ticket for action on node's container.
func (ts *ticketStore) issue(node, container, action string, now time.Time) (string, time.Time, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	expires := now.Add(ticketTTL)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.prune(now)
	if len(ts.items) >= maxTickets {
		return "", time.Time{}, errTooManyTickets
	}
	ts.items = append(ts.items, ticket{hash: sha256.Sum256([]byte(tok)), node: node, container: container, action: action, expires: expires})
	return tok, expires, nil
}

// redeem consumes the ticket presented, whatever it was for, and reports
// whether it was valid for action on node's container. Every stored hash is
// compared, in constant time.
func (ts *ticketStore) redeem(presented, node, container, action string, now time.Time) bool {
	h := sha256.Sum256([]byte(presented))
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.prune(now)
	found := -1
	for i := range ts.items {
		if subtle.ConstantTimeCompare(h[:], ts.items[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return false
	}
	t := ts.items[found]
	ts.items = append(ts.items[:found], ts.items[found+1:]...)
	return t.node == node && t.container == container && t.action == action
}

func (ts *ticketStore) prune(now time.Time) {
	kept := ts.items[:0]
	for _, t := range ts.items {
		if now.Before(t.expires) {
			kept = append(kept, t)
		}
	}
	clear(ts.items[len(kept):])
	ts.items = kept
}

// handleTicket issues a console ticket: POST
// /api/nodes/{id}/containers/{containerId}/tickets {"action": "exec" |
// "attach" | "stats"} -> 201 {ticket, action, expiresAt}. The action is
// required: a ticket opens one endpoint only.
func (srv *Server) handleTicket(w http.ResponseWriter, r *http.Request) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	var req ticketRequest
	if err := srv.decodeBody(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	switch req.Action {
	case ticketExec, ticketAttach, ticketStats:
	case "":
		writeError(w, http.StatusBadRequest, `action is required: the console endpoint the ticket opens, {"action": "exec"}, "attach" or "stats"`)
		return
	default:
		writeError(w, http.StatusBadRequest, `action must be "exec", "attach" or "stats", got %q`, clip(req.Action))
		return
	}
	container := r.PathValue("containerId")
	tok, expires, err := srv.tickets.issue(n.ID, container, req.Action, srv.now())
	switch {
	case errors.Is(err, errTooManyTickets):
		writeError(w, http.StatusTooManyRequests, "%v", err)
		return
	case err != nil:
		writeErr(w, err)
		return
	}
	srv.log.Info("console ticket issued", "node", n.ID, "container", container, "action", req.Action)
	writeJSON(w, http.StatusCreated, struct {
		Ticket    string `json:"ticket"`
		Action    string `json:"action"`
		ExpiresAt string `json:"expiresAt"`
	}{tok, req.Action, expires.UTC().Format(time.RFC3339)})
}

// consoleAuth lets a request through with the admin bearer token, or with
// a console ticket (?ticket=) for action on the node and container of its
// path. A ticket presented at another endpoint is used up and refused.
func (srv *Server) consoleAuth(action string, h http.HandlerFunc) http.HandlerFunc {
	admin := srv.admin(h)
	return func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("ticket")
		if t == "" || r.Header.Get("Authorization") != "" {
			admin(w, r)
			return
		}
		if !srv.tickets.redeem(t, r.PathValue("id"), r.PathValue("containerId"), action, srv.now()) {
			srv.log.Info("console ticket refused", "node", r.PathValue("id"), "container", r.PathValue("containerId"), "action", action, "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, "invalid, expired or already used console ticket, or one for another container or action")
			return
		}
		h(w, r)
	}
}
