// Package store is lormas-server's persistent state: one SQLite file
// (modernc.org/sqlite, pure Go) holding the registered nodes and the server's
// generated secrets. The schema is created on first open and migrated forward
// by version (PRAGMA user_version, see migrate.go).
//
// Times are stored as RFC 3339 text in UTC with nine fraction digits, so the
// file is readable with the sqlite3 shell and sorts correctly.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Errors returned by the store, matched with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrDuplicateName = errors.New("name already in use")
)

// FileName is the database file's name inside DATA_DIR.
const FileName = "lormas.db"

// busyTimeout is how long a connection waits for another writer's lock
// before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db *sql.DB
}

// Open opens (creating if needed) the database file at path, switches it to
// WAL mode and applies pending migrations. A new file is created with mode
// 0600: it holds the JWT secret.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// IMMEDIATE transactions take the write lock at BEGIN, so two writers
	// queue on busy_timeout instead of failing an upgrade mid-transaction.
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// SQLite has one writer at a time anyway; a small pool keeps readers
	// concurrent under WAL without piling up idle file handles.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := migrate(ctx, db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate database %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// createPrivate creates path with mode 0600 if it does not exist yet, so
// SQLite (which copies the main file's mode to its -wal and -shm files) never
// creates it world-readable under a permissive umask.
func createPrivate(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	return f.Close()
}

// Close closes the database.
func (s *Store) Close() error {
	return s.db.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.db.PingContext(ctx)
}

// Setting returns the value stored under key, and whether there is one.
func (s *Store) Setting(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read setting %s: %w", key, err)
	}
	return v, true, nil
}

// SettingOrInit returns the value stored under key; when there is none it
// stores init() and returns that. Two servers racing on one file agree on
// the first value written.
func (s *Store) SettingOrInit(ctx context.Context, key string, init func() (string, error)) (value string, created bool, err error) {
	if v, ok, err := s.Setting(ctx, key); err != nil || ok {
		return v, false, err
	}
	v, err := init()
	if err != nil {
		return "", false, err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, v)
	if err != nil {
		return "", false, fmt.Errorf("store setting %s: %w", key, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return v, true, nil
	}
	v, _, err = s.Setting(ctx, key)
	return v, false, err
}

// timeLayout is RFC 3339 with all nine fraction digits: unlike RFC3339Nano,
// which trims trailing zeros, its text sorts like the times it holds
// (Nodes orders by created_at). Rows written with the trimmed form still parse.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t, nil
}
