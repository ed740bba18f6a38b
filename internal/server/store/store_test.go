package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testNode(id, name string) Node {
	now := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)
	return Node{ID: id, Name: name, Description: "d " + name, CreatedAt: now, TokenID: "jti-" + id, TokenIssuedAt: now}
}

func TestOpenCreatesPrivateFileAndSchema(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, FileName)
	s := openTest(t, path)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("database file mode = %o, want 600", got)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("data dir mode = %o, want 700", got)
	}
	v, err := s.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != SchemaVersion {
		t.Errorf("schema version = %d, want %d", v, SchemaVersion)
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrateFromEmptyAndIdempotent(t *testing.T) {
	ctx := context.Background()
	db := rawDB(t, filepath.Join(t.TempDir(), "m.db"))
	steps := []string{
		`CREATE TABLE a (x INTEGER)`,
		`ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z TEXT)`,
	}
	if err := migrate(ctx, db, steps[:1]); err != nil {
		t.Fatalf("migrate to 1: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO a (x) VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	// Second run with one more step applies only that step; the data survives.
	if err := migrate(ctx, db, steps); err != nil {
		t.Fatalf("migrate to 2: %v", err)
	}
	// And re-running at the current version changes nothing (a re-applied
	// CREATE TABLE would fail).
	if err := migrate(ctx, db, steps); err != nil {
		t.Fatalf("re-run at version 2: %v", err)
	}
	var x int
	var y sql.NullString
	if err := db.QueryRow(`SELECT x, y FROM a`).Scan(&x, &y); err != nil {
		t.Fatal(err)
	}
	if x != 1 || y.Valid {
		t.Errorf("row after migrations = (%d, %v), want (1, NULL)", x, y)
	}
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 2 {
		t.Errorf("user_version = %d, want 2", v)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	db := rawDB(t, filepath.Join(t.TempDir(), "m.db"))
	steps := []string{`CREATE TABLE a (x INTEGER)`, `CREATE TABLE b (`}
	err := migrate(ctx, db, steps)
	if err == nil || !strings.Contains(err.Error(), "migration 2") {
		t.Fatalf("migrate = %v, want an error naming migration 2", err)
	}
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 0 {
		t.Errorf("user_version after failed migration = %d, want 0", v)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("table a exists after a failed migration run: the run was not atomic")
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	db := rawDB(t, path)
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open = %v, want a newer-schema error", err)
	}
}

func TestNodesCRUD(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), FileName))

	a, b := testNode("id-a", "alpha"), testNode("id-b", "beta")
	b.CreatedAt = b.CreatedAt.Add(time.Second)
	for _, n := range []Node{a, b} {
		if err := s.CreateNode(ctx, n); err != nil {
			t.Fatalf("CreateNode(%s): %v", n.Name, err)
		}
	}
	dup := testNode("id-c", "alpha")
	if err := s.CreateNode(ctx, dup); !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("CreateNode duplicate = %v, want ErrDuplicateName", err)
	}

	got, err := s.Node(ctx, "id-a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "alpha" || got.Description != "d alpha" || !got.CreatedAt.Equal(a.CreatedAt) ||
		got.TokenID != "jti-id-a" || !got.LastHeartbeat.IsZero() || got.Resources != nil {
		t.Errorf("Node = %+v, want %+v", got, a)
	}
	if _, err := s.Node(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Node(nope) = %v, want ErrNotFound", err)
	}

	list, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Errorf("Nodes = %+v, want alpha, beta", list)
	}

	at := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	res := json.RawMessage(`{"cpu":0.25,"memory":"512MB"}`)
	if err := s.RecordHeartbeat(ctx, "id-a", at, res); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIdentify(ctx, "id-a", "1.2.3", json.RawMessage(`{"hostname":"h"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetToken(ctx, "id-a", "jti-2", at); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Node(ctx, "id-a")
	if !got.LastHeartbeat.Equal(at) || string(got.Resources) != string(res) || got.AgentVersion != "1.2.3" ||
		string(got.AgentInfo) != `{"hostname":"h"}` || got.TokenID != "jti-2" || !got.TokenIssuedAt.Equal(at) {
		t.Errorf("after updates Node = %+v", got)
	}
	if err := s.RecordHeartbeat(ctx, "nope", at, res); !errors.Is(err, ErrNotFound) {
		t.Errorf("RecordHeartbeat(nope) = %v, want ErrNotFound", err)
	}

	if err := s.DeleteNode(ctx, "id-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNode(ctx, "id-a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteNode = %v, want ErrNotFound", err)
	}
	// The name is free again.
	if err := s.CreateNode(ctx, testNode("id-d", "alpha")); err != nil {
		t.Errorf("CreateNode after delete: %v", err)
	}
}

func TestReissueNeedsTheKeyAndALaterProof(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), FileName))
	keyed := testNode("id-1", "worker")
	keyed.PublicKey, keyed.LastProofAt = "pub-1", 100
	if err := s.CreateNode(ctx, keyed); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, testNode("id-2", "admin-made")); err != nil {
		t.Fatal(err)
	}
	n, err := s.NodeByName(ctx, "worker")
	if err != nil || n.ID != "id-1" || n.PublicKey != "pub-1" || n.LastProofAt != 100 {
		t.Fatalf("NodeByName = %+v, %v", n, err)
	}
	if _, err := s.NodeByName(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("NodeByName(nobody) = %v, want ErrNotFound", err)
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name, id, key string
		proofAt       int64
		want          error
	}{
		{"another key", "id-1", "pub-2", 200, ErrStaleProof},
		{"replayed proof", "id-1", "pub-1", 100, ErrStaleProof},
		{"older proof", "id-1", "pub-1", 99, ErrStaleProof},
		{"node without key", "id-2", "", 200, ErrStaleProof},
		{"unknown node", "id-9", "pub-1", 200, ErrNotFound},
	} {
		if err := s.Reissue(ctx, c.id, c.key, c.proofAt, "jti-x", at); !errors.Is(err, c.want) {
			t.Errorf("%s: Reissue = %v, want %v", c.name, err, c.want)
		}
	}
	if err := s.RefreshToken(ctx, "id-1", "jti-id-1", "jti-r", at); err != nil {
		t.Fatal(err)
	}
	if err := s.Reissue(ctx, "id-1", "pub-1", 101, "jti-new", at); err != nil {
		t.Fatalf("Reissue with the key and a later proof: %v", err)
	}
	n, _ = s.Node(ctx, "id-1")
	if n.TokenID != "jti-new" || n.PrevTokenID != "" || n.LastProofAt != 101 {
		t.Errorf("after Reissue node = %+v, want jti-new, no previous token, last proof 101", n)
	}
	if err := s.Reissue(ctx, "id-1", "pub-1", 101, "jti-again", at); !errors.Is(err, ErrStaleProof) {
		t.Errorf("the same proof twice: %v, want ErrStaleProof", err)
	}
}

func TestRefreshKeepsThePreviousTokenAndRotationDropsIt(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), FileName))
	if err := s.CreateNode(ctx, testNode("id-1", "worker")); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.RefreshToken(ctx, "id-1", "jti-id-1", "jti-2", at); err != nil {
		t.Fatal(err)
	}
	n, _ := s.Node(ctx, "id-1")
	if n.TokenID != "jti-2" || n.PrevTokenID != "jti-id-1" {
		t.Errorf("after refresh: current %q previous %q, want jti-2 and jti-id-1", n.TokenID, n.PrevTokenID)
	}
	// A refresh based on a token that is no longer current does nothing.
	if err := s.RefreshToken(ctx, "id-1", "jti-id-1", "jti-3", at); !errors.Is(err, ErrNotFound) {
		t.Errorf("stale refresh = %v, want ErrNotFound", err)
	}
	if err := s.SetToken(ctx, "id-1", "jti-rotated", at); err != nil {
		t.Fatal(err)
	}
	n, _ = s.Node(ctx, "id-1")
	if n.TokenID != "jti-rotated" || n.PrevTokenID != "" {
		t.Errorf("after rotation: current %q previous %q, want only jti-rotated", n.TokenID, n.PrevTokenID)
	}
}

// A database of schema 1 (before keys) migrates with its nodes intact: no
// key, no previous token.
func TestMigrationFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO nodes (id, name, created_at, token_id, token_issued_at)
		VALUES ('old', 'old-node', '2024-01-01T00:00:00Z', 'jti-old', '2024-01-01T00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := openTest(t, path)
	n, err := s.Node(ctx, "old")
	if err != nil || n.TokenID != "jti-old" || n.PublicKey != "" || n.PrevTokenID != "" || n.LastProofAt != 0 {
		t.Errorf("migrated node = %+v, %v", n, err)
	}
}

func TestSettingsPersistAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	v, created, err := s.SettingOrInit(ctx, "k", func() (string, error) { return "first", nil })
	if err != nil || !created || v != "first" {
		t.Fatalf("SettingOrInit = %q, %v, %v", v, created, err)
	}
	v, created, err = s.SettingOrInit(ctx, "k", func() (string, error) { return "second", nil })
	if err != nil || created || v != "first" {
		t.Fatalf("second SettingOrInit = %q, %v, %v; want first, not created", v, created, err)
	}
	if err := s.CreateNode(ctx, testNode("id-a", "alpha")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTest(t, path)
	v, ok, err := s2.Setting(ctx, "k")
	if err != nil || !ok || v != "first" {
		t.Errorf("after reopen Setting = %q, %v, %v; want first", v, ok, err)
	}
	if _, err := s2.Node(ctx, "id-a"); err != nil {
		t.Errorf("node after reopen: %v", err)
	}
}

// Nodes lists oldest first even within one second: stored times must sort
// as text the way they sort as times ("05Z" after "05.5Z" would not).
func TestNodesOldestFirstWithinASecond(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), FileName))
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	offsets := []time.Duration{0, 100 * time.Millisecond, 150 * time.Millisecond, 500 * time.Millisecond}
	// Names sort against creation order, so a name tiebreak cannot mask it.
	names := []string{"zulu", "yankee", "xray", "whiskey"}
	for i, off := range offsets {
		n := testNode("id-"+names[i], names[i])
		n.CreatedAt = base.Add(off)
		if err := s.CreateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range list {
		got = append(got, n.Name)
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("Nodes order = %v, want creation order %v", got, names)
	}
}

// NodesPage walks the list in Nodes' order, each node once, also over rows
// whose created_at was written in the older trimmed format.
func TestNodesPageWalk(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), FileName))
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 12 {
		n := testNode(fmt.Sprintf("id-%02d", i), fmt.Sprintf("name-%02d", 11-i))
		// Some share a creation time (then the name orders them), some
		// have fractions that the trimmed format shortens.
		n.CreatedAt = base.Add(time.Duration(i/3) * 500 * time.Millisecond)
		if err := s.CreateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// Rows written before the fixed-width format: ".5Z" instead of
	// ".500000000Z".
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET created_at = ? WHERE id IN ('id-03', 'id-04')`,
		base.Add(500*time.Millisecond).Format(time.RFC3339Nano)); err != nil {
		t.Fatal(err)
	}
	all, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 2, 5, 12, 50} {
		var got []string
		var after *PageKey
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatalf("limit %d: the walk does not end", limit)
			}
			page, err := s.NodesPage(ctx, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range page {
				got = append(got, n.ID)
			}
			if len(page) < limit {
				break
			}
			k := page[len(page)-1].Key()
			after = &k
		}
		var want []string
		for _, n := range all {
			want = append(want, n.ID)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("limit %d: walk %v\nwant %v", limit, got, want)
		}
	}
}

// RecordNodeUpdates writes heartbeats and identify details in one go and
// counts the updates whose node exists.
func TestRecordNodeUpdates(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), FileName))
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := s.CreateNode(ctx, testNode(id, "n-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
	applied, err := s.RecordNodeUpdates(ctx, []NodeUpdate{
		{ID: "a", HasHeartbeat: true, LastHeartbeat: at, Resources: json.RawMessage(`{"cpu":0.5}`)},
		{ID: "b", HasIdentify: true, AgentVersion: "2.0", AgentInfo: json.RawMessage(`{"version":"2.0"}`),
			HasHeartbeat: true, LastHeartbeat: at, Resources: json.RawMessage(`{"cpu":1}`)},
		{ID: "gone", HasHeartbeat: true, LastHeartbeat: at},
	})
	if err != nil || applied != 2 {
		t.Fatalf("RecordNodeUpdates = %d, %v; want 2 applied", applied, err)
	}
	a, _ := s.Node(ctx, "a")
	b, _ := s.Node(ctx, "b")
	if !a.LastHeartbeat.Equal(at) || string(a.Resources) != `{"cpu":0.5}` || a.AgentVersion != "" {
		t.Errorf("a = %+v", a)
	}
	if b.AgentVersion != "2.0" || string(b.AgentInfo) != `{"version":"2.0"}` || string(b.Resources) != `{"cpu":1}` {
		t.Errorf("b = %+v", b)
	}
}
