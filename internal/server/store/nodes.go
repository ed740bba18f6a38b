package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Node is a registered node. TokenID is the jti of the node's only valid
// token: issuing a new token replaces it, which revokes the old one.
type Node struct {
	ID            string
	Name          string
	Description   string
	CreatedAt     time.Time
	TokenID       string
	TokenIssuedAt time.Time
	LastHeartbeat time.Time       // zero until the first heartbeat
	Resources     json.RawMessage // the last heartbeat's resources object, nil before
	AgentVersion  string          // from agent_identify
	AgentInfo     json.RawMessage // the last agent_identify message, nil before
}

const nodeColumns = `id, name, description, created_at, token_id, token_issued_at,
	last_heartbeat, resources, agent_version, agent_info`

type scanner interface{ Scan(dest ...any) error }

func scanNode(row scanner) (Node, error) {
	var (
		n                    Node
		created, issued      string
		heartbeat            sql.NullString
		resources, agentInfo sql.NullString
	)
	if err := row.Scan(&n.ID, &n.Name, &n.Description, &created, &n.TokenID, &issued,
		&heartbeat, &resources, &n.AgentVersion, &agentInfo); err != nil {
		return Node{}, err
	}
	var err error
	if n.CreatedAt, err = parseTime(created); err != nil {
		return Node{}, err
	}
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
	_, err = tx.ExecContext(ctx, `INSERT INTO nodes (id, name, description, created_at, token_id, token_issued_at)
		VALUES (?, ?, ?, ?, ?, ?)`,
		n.ID, n.Name, n.Description, formatTime(n.CreatedAt), n.TokenID, formatTime(n.TokenIssuedAt))
	if err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

// EnrollNode registers candidate, or, when a node with candidate.Name exists
// already, gives that node candidate's token (TokenID, TokenIssuedAt) and
// returns it. created reports which happened. Both run in one transaction,
// so concurrent enrollments of one name end with one node.
func (s *Store) EnrollNode(ctx context.Context, candidate Node) (n Node, created bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Node{}, false, fmt.Errorf("enroll node: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	existing, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = ?`, candidate.Name))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if err := insertNode(ctx, tx, candidate); err != nil {
			return Node{}, false, err
		}
		n, created = candidate, true
	case err != nil:
		return Node{}, false, fmt.Errorf("enroll node: %w", err)
	default:
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET token_id = ?, token_issued_at = ? WHERE id = ?`,
			candidate.TokenID, formatTime(candidate.TokenIssuedAt), existing.ID); err != nil {
			return Node{}, false, fmt.Errorf("enroll node: %w", err)
		}
		existing.TokenID, existing.TokenIssuedAt = candidate.TokenID, candidate.TokenIssuedAt
		n = existing
	}
	if err := tx.Commit(); err != nil {
		return Node{}, false, fmt.Errorf("enroll node: %w", err)
	}
	return n, created, nil
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
	defer rows.Close()
	nodes := []Node{}
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

// DeleteNode removes the node, or returns ErrNotFound.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	return s.updateOne(ctx, "delete node", id, `DELETE FROM nodes WHERE id = ?`, id)
}

// SetToken records tokenID as the node's only valid token.
func (s *Store) SetToken(ctx context.Context, id, tokenID string, issuedAt time.Time) error {
	return s.updateOne(ctx, "set node token", id,
		`UPDATE nodes SET token_id = ?, token_issued_at = ? WHERE id = ?`, tokenID, formatTime(issuedAt), id)
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
