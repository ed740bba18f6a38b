package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// StoredTokenName is the file in STATE_DIR holding the token issued at
// enrollment (and renewed since).
const StoredTokenName = "node-token"

// RefreshedTokenName is the file in STATE_DIR holding the newest token the
// server handed over in token_refresh, until a dial proves it genuine (see
// RefreshedTokenFile).
const RefreshedTokenName = "node-token.refreshed"

// StoredKeyName is the file in STATE_DIR holding the node's enrollment key
// (written by internal/enroll, whose KeyFileName it equals).
const StoredKeyName = "node-key"

// ErrNoToken means no node token is configured or stored: the agent must
// enroll first.
var ErrNoToken = errors.New("no node token: set NODE_TOKEN or NODE_TOKEN_FILE, or enroll with ENROLLMENT_TOKEN")

// TokenSource returns the function the agent calls before every dial to get
// the node's credential: NODE_TOKEN_FILE read afresh on each call (so a
// rotated token needs no restart), else NODE_TOKEN, else the token stored
// in STATE_DIR by enrollment (also read afresh). A token handed over in
// token_refresh is not part of it: it lives apart (RefreshedTokens) and the
// agent prefers it only while the server accepts it. Errors never contain
// the token.
func (c *Config) TokenSource() func() (string, error) {
	switch {
	case c.NodeTokenFile != "":
		path := c.NodeTokenFile
		return func() (string, error) {
			tok, err := readTokenFile(path)
			if err != nil {
				return "", fmt.Errorf("NODE_TOKEN_FILE: %w", err)
			}
			return tok, nil
		}
	case !c.NodeToken.IsZero():
		tok := c.NodeToken
		return func() (string, error) { return tok.Reveal(), nil }
	default:
		return c.StoredToken
	}
}

// credentialIsStored reports whether the node's credential is the token in
// STATE_DIR/node-token (enrolled, or stored there by an operator) rather
// than NODE_TOKEN or NODE_TOKEN_FILE.
func (c *Config) credentialIsStored() bool {
	return c.NodeTokenFile == "" && c.NodeToken.IsZero()
}

// RefreshedTokenFile keeps the tokens the server hands over in token_refresh
// in STATE_DIR/node-token.refreshed (0600), apart from the node's
// credential, so an unverified token never replaces the credential: the
// agent cannot check a token's signature, and a hostile server or a man in
// the middle of ws:// could otherwise plant a token that locks it out. The
// agent dials with the refreshed token while it is preferable; once the
// server has accepted it (Accepted) an enrolled agent makes it its stored
// credential, and when the server refuses it (Discard) the file is removed
// and the agent falls back to its credential. It implements
// agent.RefreshedTokenStore.
type RefreshedTokenFile struct {
	cfg *Config
}

// RefreshedTokens returns the store of refreshed tokens in STATE_DIR.
func (c *Config) RefreshedTokens() RefreshedTokenFile { return RefreshedTokenFile{cfg: c} }

// Path is STATE_DIR/node-token.refreshed.
func (f RefreshedTokenFile) Path() string {
	return filepath.Join(f.cfg.StateDir, RefreshedTokenName)
}

// Load returns the refreshed token kept by an earlier run, "" when none.
func (f RefreshedTokenFile) Load() (string, error) {
	tok, err := readTokenFile(f.Path())
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, errEmptyFile) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("refreshed token: %w", err)
	}
	return tok, nil
}

// Save keeps tok (atomically, mode 0600), replacing the one kept before.
func (f RefreshedTokenFile) Save(tok string) error {
	if err := f.cfg.writeStateFile(RefreshedTokenName, tok); err != nil {
		return fmt.Errorf("store refreshed token: %w", err)
	}
	return nil
}

// Accepted is called once the server accepted a dial with tok. When the
// node's credential is STATE_DIR/node-token (enrolled), tok becomes it
// (which an enrolled agent's renewal needs: the server renews only from
// the node's current or previous token), and the refreshed file goes. An
// operator's NODE_TOKEN or NODE_TOKEN_FILE is never written: the file stays
// and is preferred while it is newer.
func (f RefreshedTokenFile) Accepted(tok string) error {
	if !f.cfg.credentialIsStored() {
		return nil
	}
	if err := f.cfg.StoreToken(tok); err != nil {
		return err
	}
	if kept, err := f.Load(); err == nil && kept == tok {
		return f.Discard()
	}
	return nil
}

// Discard removes the refreshed token: the server refused it.
func (f RefreshedTokenFile) Discard() error {
	if err := os.Remove(f.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove refreshed token: %w", err)
	}
	return nil
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
	if err := c.writeStateFile(StoredTokenName, tok); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	return nil
}

// writeStateFile writes tok to STATE_DIR/name atomically with mode 0600,
// creating STATE_DIR with mode 0700.
func (c *Config) writeStateFile(name, tok string) error {
	if err := checkTokenText(tok); err != nil {
		return fmt.Errorf("token %w", err)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(c.StateDir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(c.StateDir, name))
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
