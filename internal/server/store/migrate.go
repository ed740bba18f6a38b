package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations is the schema's history: migrations[i] takes the database from
// version i to version i+1 (PRAGMA user_version). Only append; never edit a
// migration that has shipped.
var migrations = []string{
	// 1: nodes and settings.
	`CREATE TABLE settings (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);
	CREATE TABLE nodes (
		id             TEXT PRIMARY KEY,
		name           TEXT NOT NULL UNIQUE,
		description    TEXT NOT NULL DEFAULT '',
		created_at     TEXT NOT NULL,
		token_id       TEXT NOT NULL,
		token_issued_at TEXT NOT NULL,
		last_heartbeat TEXT,
		resources      TEXT,
		agent_version  TEXT NOT NULL DEFAULT '',
		agent_info     TEXT
	);`,
	// 2: the node's enrollment key and proof replay guard, and the token
	// before the last refresh (valid until its own exp).
	`ALTER TABLE nodes ADD COLUMN public_key TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN last_proof_at INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN prev_token_id TEXT NOT NULL DEFAULT '';`,
	// 3: the node list's order as an index, so that a page of it
	// (NodesPage) reads its rows instead of sorting the whole table.
	`CREATE INDEX nodes_by_creation ON nodes (created_at, name);`,
}

// SchemaVersion is the schema version this build creates and understands.
var SchemaVersion = len(migrations)

// migrate applies the migrations the database has not seen yet, all in one
// transaction, so a failed migration leaves the previous version intact. A
// database newer than this build is refused rather than misread.
func migrate(ctx context.Context, db *sql.DB, steps []string) error {
	// One connection for the whole transaction: PRAGMA user_version must be
	// read and written on the connection that holds the write lock.
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(steps) {
		return fmt.Errorf("database schema version %d is newer than this server understands (%d); upgrade lormas-server", version, len(steps))
	}
	if version == len(steps) {
		return nil
	}
	for i := version; i < len(steps); i++ {
		if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	// PRAGMA takes no bound parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(steps))); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Version returns the database's schema version.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v)
	return v, err
}
