package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/nodetoken"
)

// StoredTokenName is the file in STATE_DIR holding the token issued at
// enrollment.
const StoredTokenName = "node-token"

// StoredKeyName is the file in STATE_DIR holding the node's enrollment key
// (written by internal/enroll, whose KeyFileName it equals).
const StoredKeyName = "node-key"

// ErrNoToken means no node token is configured or stored: the agent must
// enroll first.
var ErrNoToken = errors.New("no node token: set NODE_TOKEN or NODE_TOKEN_FILE, or enroll with ENROLLMENT_TOKEN")

// TokenSource returns the function the agent calls before every dial to get
// the node token: NODE_TOKEN_FILE read afresh on each call (so a rotated
// token needs no restart), else NODE_TOKEN, else the token stored in
// STATE_DIR by enrollment (also read afresh). With NODE_TOKEN[_FILE], the
// token in STATE_DIR/node-token wins while it is a token the server handed
// over in token_refresh for the same node: issued later than the
// configured one and not expired (nodetoken.Prefer). Errors never contain
// the token.
func (c *Config) TokenSource() func() (string, error) {
	var configured func() (string, error)
	switch {
	case c.NodeTokenFile != "":
		path := c.NodeTokenFile
		configured = func() (string, error) {
			tok, err := readTokenFile(path)
			if err != nil {
				return "", fmt.Errorf("NODE_TOKEN_FILE: %w", err)
			}
			return tok, nil
		}
	case !c.NodeToken.IsZero():
		tok := c.NodeToken
		configured = func() (string, error) { return tok.Reveal(), nil }
	default:
		return c.StoredToken
	}
	return func() (string, error) {
		tok, err := configured()
		if err != nil {
			return "", err
		}
		stored, serr := readTokenFile(c.StoredTokenPath())
		if serr != nil {
			return tok, nil
		}
		return nodetoken.Prefer(tok, stored, time.Now()), nil
	}
}

// CredentialHint tells an operator where a new node token goes when the
// server refuses the current one (rotated, revoked, node deleted).
func (c *Config) CredentialHint() string {
	stored := c.StoredTokenPath()
	switch {
	case c.NodeTokenFile != "":
		return fmt.Sprintf("write the node's new token (PATCH /api/nodes/{id}/token) into NODE_TOKEN_FILE (%s)", c.NodeTokenFile)
	case !c.NodeToken.IsZero():
		return fmt.Sprintf("set NODE_TOKEN to the node's new token (PATCH /api/nodes/{id}/token) and restart the agent, or write it into %s", stored)
	default:
		return fmt.Sprintf("write the node's new token (PATCH /api/nodes/{id}/token) into %s; or, to enroll as a NEW node, remove %s and %s and restart the agent",
			stored, stored, filepath.Join(c.StateDir, StoredKeyName))
	}
}

// NeedsEnrollment reports whether the agent has no node token yet and must
// enroll with the enrollment token before it can connect.
func (c *Config) NeedsEnrollment() bool {
	if c.NodeTokenFile != "" || !c.NodeToken.IsZero() {
		return false
	}
	_, err := c.StoredToken()
	return err != nil
}

// Enrolls reports whether the agent's node token comes from enrollment: an
// enrollment token is configured (so no node token is, the configuration
// allows one source) and the issued token lives in STATE_DIR.
func (c *Config) Enrolls() bool {
	return !c.EnrollmentToken.IsZero() || c.EnrollmentTokenFile != ""
}

// EnrollmentTokenValue returns the enrollment token: ENROLLMENT_TOKEN, or
// ENROLLMENT_TOKEN_FILE read afresh (trimmed).
func (c *Config) EnrollmentTokenValue() (string, error) {
	if c.EnrollmentTokenFile != "" {
		tok, err := readTokenFile(c.EnrollmentTokenFile)
		if err != nil {
			return "", fmt.Errorf("ENROLLMENT_TOKEN_FILE: %w", err)
		}
		return tok, nil
	}
	if c.EnrollmentToken.IsZero() {
		return "", errors.New("no enrollment token: set ENROLLMENT_TOKEN or ENROLLMENT_TOKEN_FILE")
	}
	return c.EnrollmentToken.Reveal(), nil
}

// StoredTokenPath is STATE_DIR/node-token.
func (c *Config) StoredTokenPath() string {
	return filepath.Join(c.StateDir, StoredTokenName)
}

// StoredToken reads the token stored by an earlier enrollment; ErrNoToken
// (wrapped) when there is none.
func (c *Config) StoredToken() (string, error) {
	tok, err := readTokenFile(c.StoredTokenPath())
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, errEmptyFile) {
		return "", fmt.Errorf("%w (%s: %w)", ErrNoToken, c.StoredTokenPath(), err)
	}
	if err != nil {
		return "", fmt.Errorf("stored token: %w", err)
	}
	return tok, nil
}

// StoreToken writes tok to STATE_DIR/node-token with mode 0600, creating
// STATE_DIR with mode 0700. The write is atomic (temporary file + rename):
// a crash never leaves a truncated token behind.
func (c *Config) StoreToken(tok string) error {
	if err := checkTokenText(tok); err != nil {
		return fmt.Errorf("store token: token %w", err)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	f, err := os.CreateTemp(c.StateDir, "."+StoredTokenName+"-*")
	if err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("store token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("store token: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("store token: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	if err := os.Rename(f.Name(), c.StoredTokenPath()); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	return nil
}

var errEmptyFile = errors.New("file is empty")

// readTokenFile reads a token file and trims surrounding whitespace (a
// trailing newline would break the Authorization header). The error names
// the file, never its contents.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", withPermissionFix(path, err) // *PathError: "open <path>: <reason>"
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s: %w", path, errEmptyFile)
	}
	if err := checkTokenText(tok); err != nil {
		return "", fmt.Errorf("%s: token %w", path, err)
	}
	return tok, nil
}

// readable checks that path can be opened for reading.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return withPermissionFix(path, err)
	}
	return f.Close()
}

// withPermissionFix adds to a "permission denied" on path what to run: the
// agent often runs as another user (uid 65532 in the image) than the one
// who wrote the file (root, mode 0600), and "permission denied" alone
// leaves the operator guessing whose permission.
func withPermissionFix(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return &permissionError{err: err, path: path, uid: os.Getuid(), gid: os.Getgid()}
}

// permissionError is a file the agent's user may not read, with the fix.
type permissionError struct {
	err      error
	path     string
	uid, gid int
}

func (e *permissionError) Error() string {
	return fmt.Sprintf("%v: the agent runs as uid %d (gid %d) and may not read it; "+
		"give it to that user: sudo chown %d %s && sudo chmod 0400 %s "+
		"(in a container: the host file mounted at %s)",
		e.err, e.uid, e.gid, e.uid, e.path, e.path, e.path)
}

func (e *permissionError) Unwrap() error { return e.err }
