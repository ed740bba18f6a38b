package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFileTrimmedAndReRead(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "token", "  first-token\n")
	cfg := mustLoad(t, "", "NODE_TOKEN_FILE="+file)
	next := cfg.TokenSource()
	if got, err := next(); err != nil || got != "first-token" {
		t.Fatalf("token = %q, %v; want first-token (trimmed)", got, err)
	}
	writeFile(t, dir, "token", "rotated-token\r\n")
	if got, err := next(); err != nil || got != "rotated-token" {
		t.Fatalf("after rotation token = %q, %v; want rotated-token", got, err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	_, err := next()
	if err == nil || !strings.HasPrefix(err.Error(), "NODE_TOKEN_FILE: open ") {
		t.Errorf("removed file: err = %v", err)
	}
	writeFile(t, dir, "token", "two words\n")
	if _, err := next(); err == nil || strings.Contains(err.Error(), "two words") {
		t.Errorf("token with whitespace: err = %v (must fail without echoing)", err)
	}
}

func TestTokenSourceEnvAndStored(t *testing.T) {
	cfg := mustLoad(t, "", "NODE_TOKEN="+testToken)
	if got, _ := cfg.TokenSource()(); got != testToken {
		t.Errorf("NODE_TOKEN source = %q", got)
	}
	if cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment with NODE_TOKEN")
	}

	cfg = mustLoad(t, "", "ENROLLMENT_TOKEN=enroll-me")
	if !cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment false before enrollment")
	}
	if _, err := cfg.TokenSource()(); !errors.Is(err, ErrNoToken) {
		t.Errorf("before enrollment: err = %v, want ErrNoToken", err)
	}
	if got, err := cfg.EnrollmentTokenValue(); err != nil || got != "enroll-me" {
		t.Errorf("EnrollmentTokenValue = %q, %v", got, err)
	}
	if err := cfg.StoreToken(testToken); err != nil {
		t.Fatal(err)
	}
	if cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment after StoreToken")
	}
	if got, err := cfg.TokenSource()(); err != nil || got != testToken {
		t.Errorf("stored token = %q, %v", got, err)
	}
	st, err := os.Stat(cfg.StoredTokenPath())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, %v; want 0600", st.Mode(), err)
	}
	dst, err := os.Stat(cfg.StateDir)
	if err != nil || dst.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, %v; want 0700", dst.Mode(), err)
	}
	entries, _ := os.ReadDir(cfg.StateDir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s", len(entries), StoredTokenName)
	}

	// Later starts: no token variable at all, the stored token is enough.
	again, err := load([]string{"STATE_DIR=" + cfg.StateDir}, filepath.Join(t.TempDir(), ".env"))
	if err != nil {
		t.Fatalf("restart with stored token: %v", err)
	}
	if got, _ := again.TokenSource()(); got != testToken {
		t.Errorf("restart token = %q", got)
	}
	if err := cfg.StoreToken("bad token"); err == nil || strings.Contains(err.Error(), "bad token") {
		t.Errorf("StoreToken of a token with a space: %v", err)
	}
}

func TestEnrollmentTokenFileReadFresh(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "enroll", "one\n")
	cfg := mustLoad(t, "", "ENROLLMENT_TOKEN_FILE="+file)
	writeFile(t, dir, "enroll", "two\n")
	if got, err := cfg.EnrollmentTokenValue(); err != nil || got != "two" {
		t.Errorf("EnrollmentTokenValue = %q, %v; want two", got, err)
	}
}
