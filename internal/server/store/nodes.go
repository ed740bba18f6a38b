package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// Node is a registered node. TokenID is the jti of the node's current
// token. PrevTokenID is the token it replaced in a refresh (token_refresh),
// which stays valid until its own exp; every other way of issuing a token
// (rotation, re-enrollment) clears it, revoking both.
type Node struct {
	ID            string
	Name          string
	Description   string
	CreatedAt     time.Time
	TokenID       string
	PrevTokenID   string
	TokenIssuedAt time.Time
	// PublicKey is the node's Ed25519 enrollment key (standard base64),
	// "" for a node created by an administrator or enrolled without one:
	// such a node's token is never re-issued through enrollment.
	PublicKey string
	// LastProofAt is the timestamp (Unix seconds) of the last enrollment
	// proof accepted for the node; a proof must be later (replay guard).
	LastProofAt   int64
	LastHeartbeat time.Time       // zero until the first heartbeat
	Resources     json.RawMessage // the last heartbeat's resources object, nil before
	AgentVersion  string          // from agent_identify
	AgentInfo     json.RawMessage // the last agent_identify message, nil before

	createdText string // created_at as stored (Key)
}

const nodeColumns = `id, name, description, created_at, token_id, token_issued_at,
	last_heartbeat, resources, agent_version, agent_info, public_key, last_proof_at, prev_token_id`

type scanner interface{ Scan(dest ...any) error }

func scanNode(row scanner) (Node, error) {
	var (
		n                    Node
		created, issued      string
		heartbeat            sql.NullString
		resources, agentInfo sql.NullString
	)
	if err := row.Scan(&n.ID, &n.Name, &n.Description, &created, &n.TokenID, &issued,
		&heartbeat, &resources, &n.AgentVersion, &agentInfo, &n.PublicKey, &n.LastProofAt, &n.PrevTokenID); err != nil {
		return Node{}, err
	}
	var err error
	if n.CreatedAt, err = parseTime(created); err != nil {
		return Node{}, err
	}
	n.createdText = created
	if n.TokenIssuedAt, err = parseTime(issued); err != nil {
		return Node{}, err
	}
	if heartbeat.Valid {
		if n.LastHeartbeat, err = parseTime(heartbeat.String); err != nil {
			return Node{}, err
		}
	}
	if resources.Valid {
		n.Resources = json.RawMessage(resources.String)
	}
	if agentInfo.Valid {
		n.AgentInfo = json.RawMessage(agentInfo.String)
	}
	return n, nil
}

func nullJSON(b json.RawMessage) sql.NullString {
	if b == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: string(b), Valid: true}
}

// CreateNode inserts n. A node with the same name yields ErrDuplicateName.
func (s *Store) CreateNode(ctx context.Context, n Node) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := insertNode(ctx, tx, n); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

func insertNode(ctx context.Context, tx *sql.Tx, n Node) error {
	var exists int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM nodes WHERE name = ?`, n.Name).Scan(&exists)
	switch {
	case err == nil:
		return fmt.Errorf("node %q: %w", n.Name, ErrDuplicateName)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("create node: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO nodes (id, name, description, created_at, token_id, token_issued_at,
		public_key, last_proof_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		n.ID, n.Name, n.Description, formatTime(n.CreatedAt), n.TokenID, formatTime(n.TokenIssuedAt),
		n.PublicKey, n.LastProofAt)
	if err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

// ErrStaleProof is returned by Reissue when the node's key changed or a
// proof as late or later was accepted meanwhile (a concurrent replay).
var ErrStaleProof = errors.New("enrollment proof is stale")

// Reissue gives the node a new token (tokenID, issuedAt) after an
// enrollment proof by its key publicKey made at proofAt, revoking the
// current and the previous token. It succeeds only while the node's key is
// still publicKey and proofAt is later than the last accepted proof, in one
// statement, so two concurrent uses of one proof cannot both succeed.
func (s *Store) Reissue(ctx context.Context, id, publicKey string, proofAt int64, tokenID string, issuedAt time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET token_id = ?, token_issued_at = ?, prev_token_id = '', last_proof_at = ?
		WHERE id = ? AND public_key = ? AND public_key != '' AND last_proof_at < ?`,
		tokenID, formatTime(issuedAt), proofAt, id, publicKey, proofAt)
	if err != nil {
		return fmt.Errorf("re-issue node token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("re-issue node token %s: %w", id, err)
	} else if n == 0 {
		if _, err := s.Node(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("re-issue node token %s: %w", id, ErrStaleProof)
	}
	return nil
}

// NodeByName returns the node with the given name, or ErrNotFound.
func (s *Store) NodeByName(ctx context.Context, name string) (Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Node{}, fmt.Errorf("node named %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Node{}, fmt.Errorf("read node named %q: %w", name, err)
	}
	return n, nil
}

// Node returns the node with the given id, or ErrNotFound.
func (s *Store) Node(ctx context.Context, id string) (Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Node{}, fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Node{}, fmt.Errorf("read node %s: %w", id, err)
	}
	return n, nil
}

// Nodes returns every node, oldest first.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return scanNodes(rows, []Node{})
}

// DeleteNode removes the node, or returns ErrNotFound.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	return s.updateOne(ctx, "delete node", id, `DELETE FROM nodes WHERE id = ?`, id)
}

// SetToken records tokenID as the node's only valid token (rotation): the
// current and the previous token are revoked.
func (s *Store) SetToken(ctx context.Context, id, tokenID string, issuedAt time.Time) error {
	return s.updateOne(ctx, "set node token", id,
		`UPDATE nodes SET token_id = ?, token_issued_at = ?, prev_token_id = '' WHERE id = ?`, tokenID, formatTime(issuedAt), id)
}

// RefreshToken records tokenID as the node's current token and keeps the
// one it replaces as the previous token, valid until its own exp, so an
// agent that missed the token_refresh message is not locked out. It applies
// only while current is still the node's current token, so a rotation in
// between wins; otherwise (or for an unknown node) it returns ErrNotFound.
func (s *Store) RefreshToken(ctx context.Context, id, current, tokenID string, issuedAt time.Time) error {
	return s.updateOne(ctx, "refresh node token", id,
		`UPDATE nodes SET prev_token_id = token_id, token_id = ?, token_issued_at = ? WHERE id = ? AND token_id = ?`,
		tokenID, formatTime(issuedAt), id, current)
}

// RecordIdentify stores what the agent said about itself in agent_identify.
func (s *Store) RecordIdentify(ctx context.Context, id, agentVersion string, info json.RawMessage) error {
	return s.updateOne(ctx, "record agent_identify", id,
		`UPDATE nodes SET agent_version = ?, agent_info = ? WHERE id = ?`, agentVersion, nullJSON(info), id)
}

// RecordHeartbeat stores a heartbeat's time and resources object.
func (s *Store) RecordHeartbeat(ctx context.Context, id string, at time.Time, resources json.RawMessage) error {
	return s.updateOne(ctx, "record heartbeat", id,
		`UPDATE nodes SET last_heartbeat = ?, resources = ? WHERE id = ?`, formatTime(at), nullJSON(resources), id)
}

func (s *Store) updateOne(ctx context.Context, what, id, query string, args ...any) error {
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	} else if n == 0 {
		return fmt.Errorf("%s %s: %w", what, id, ErrNotFound)
	}
	return nil
}

// PageKey is the position of a node in the list's order (created_at, then
// name): a page starts after it. CreatedAt is the stored text, compared as
// SQLite compares it (rows written before the fixed-width time format sort
// by their own text).
type PageKey struct {
	CreatedAt string
	Name      string
}

// Key is n's position in the list's order.
func (n Node) Key() PageKey {
	if n.createdText == "" {
		return PageKey{CreatedAt: formatTime(n.CreatedAt), Name: n.Name}
	}
	return PageKey{CreatedAt: n.createdText, Name: n.Name}
}

// NodesPage returns at most limit nodes in the list's order (Nodes), those
// after the position after when it is not nil.
func (s *Store) NodesPage(ctx context.Context, after *PageKey, limit int) ([]Node, error) {
	q := `SELECT ` + nodeColumns + ` FROM nodes ORDER BY created_at, name LIMIT ?`
	args := []any{limit}
	if after != nil {
		q = `SELECT ` + nodeColumns + ` FROM nodes WHERE (created_at, name) > (?, ?) ORDER BY created_at, name LIMIT ?`
		args = []any{after.CreatedAt, after.Name, limit}
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return scanNodes(rows, make([]Node, 0, min(limit, 1024)))
}

// scanNodes appends the nodes of rows to nodes and closes rows.
func scanNodes(rows *sql.Rows, nodes []Node) ([]Node, error) {
	defer rows.Close()
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// NodeUpdate is what an agent reported about its node and the server
// keeps in memory until it writes a batch of them (RecordNodeUpdates): the
// last heartbeat, the last agent_identify, or both.
type NodeUpdate struct {
	ID string
	// Heartbeat: its time and resources object, when HasHeartbeat.
	HasHeartbeat  bool
	LastHeartbeat time.Time
	Resources     json.RawMessage
	// agent_identify: the agent's version and the stored message, when
	// HasIdentify.
	HasIdentify  bool
	AgentVersion string
	AgentInfo    json.RawMessage
}

// InTableOrder sorts updates into the order of the nodes' rows in the
// database (nodes it does not find go last). A fleet's heartbeats arrive
// in no order; written in that order, in transactions of a few hundred,
// nearly every row of a transaction lives on a page of its own, and each
// page is written once per transaction that touches it: a flush of 19,000
// nodes wrote three times the pages it needed (BenchmarkRecordNodeUpdates).
// In table order, consecutive updates share pages.
func (s *Store) InTableOrder(ctx context.Context, updates []NodeUpdate) error {
	at := make(map[string]int, len(updates))
	for i, u := range updates {
		at[u.ID] = i
	}
	rank := make([]int64, len(updates))
	for i := range rank {
		rank[i] = math.MaxInt64
	}
	// The id index holds every id with its rowid: read that, not the rows.
	rows, err := s.db.QueryContext(ctx, `SELECT id, rowid FROM nodes`)
	if err != nil {
		return fmt.Errorf("order node updates: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id sql.RawBytes
		var rowid int64
		if err := rows.Scan(&id, &rowid); err != nil {
			return fmt.Errorf("order node updates: %w", err)
		}
		if i, ok := at[string(id)]; ok {
			rank[i] = rowid
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("order node updates: %w", err)
	}
	sort.Stable(byRank{updates, rank})
	return nil
}

// byRank sorts updates and their ranks together, in place.
type byRank struct {
	updates []NodeUpdate
	rank    []int64
}

func (b byRank) Len() int           { return len(b.rank) }
func (b byRank) Less(i, j int) bool { return b.rank[i] < b.rank[j] }
func (b byRank) Swap(i, j int) {
	b.updates[i], b.updates[j] = b.updates[j], b.updates[i]
	b.rank[i], b.rank[j] = b.rank[j], b.rank[i]
}

// RecordNodeUpdates writes a batch of node updates in one transaction and
// returns how many found their node (a node deleted meanwhile has none).
func (s *Store) RecordNodeUpdates(ctx context.Context, updates []NodeUpdate) (applied int, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("record node updates: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	hb, err := tx.PrepareContext(ctx, `UPDATE nodes SET last_heartbeat = ?, resources = ? WHERE id = ?`)
	if err != nil {
		return 0, fmt.Errorf("record node updates: %w", err)
	}
	defer hb.Close()
	ident, err := tx.PrepareContext(ctx, `UPDATE nodes SET agent_version = ?, agent_info = ? WHERE id = ?`)
	if err != nil {
		return 0, fmt.Errorf("record node updates: %w", err)
	}
	defer ident.Close()
	for _, u := range updates {
		found := false
		if u.HasIdentify {
			res, err := ident.ExecContext(ctx, u.AgentVersion, nullJSON(u.AgentInfo), u.ID)
			if err != nil {
				return 0, fmt.Errorf("record agent_identify %s: %w", u.ID, err)
			}
			n, _ := res.RowsAffected()
			found = n > 0
		}
		if u.HasHeartbeat {
			res, err := hb.ExecContext(ctx, formatTime(u.LastHeartbeat), nullJSON(u.Resources), u.ID)
			if err != nil {
				return 0, fmt.Errorf("record heartbeat %s: %w", u.ID, err)
			}
			n, _ := res.RowsAffected()
			found = found || n > 0
		}
		if found {
			applied++
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("record node updates: %w", err)
	}
	return applied, nil
}
