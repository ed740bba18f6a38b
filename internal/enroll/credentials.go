package enroll

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lormas/lormas-agent/internal/secret"
)

// Credentials are where the node's token comes from, in this order:
// NodeTokenFile (NODE_TOKEN_FILE, read afresh before every dial, so a
// rotated token needs no restart), NodeToken (NODE_TOKEN), else the token
// stored in State by enrollment (read afresh too). The enrollment token
// (ENROLLMENT_TOKEN, or ENROLLMENT_TOKEN_FILE read afresh) lets an agent
// with no token enroll (Enroller). The configuration allows one of the four
// to be set. A token handed over in token_refresh is not part of them: it
// lives apart (Refreshed), and the agent prefers it only while the server
// accepts it. Errors never contain a token.
type Credentials struct {
	State               State
	NodeToken           secret.Value
	NodeTokenFile       string
	EnrollmentToken     secret.Value
	EnrollmentTokenFile string
}

// Token returns the node's credential as the agent dials with it.
func (c Credentials) Token() (string, error) {
	switch {
	case c.NodeTokenFile != "":
		tok, err := ReadToken(c.NodeTokenFile)
		if err != nil {
			return "", fmt.Errorf("NODE_TOKEN_FILE: %w", err)
		}
		return tok, nil
	case !c.NodeToken.IsZero():
		return c.NodeToken.Reveal(), nil
	default:
		return c.State.Token()
	}
}

// stored reports whether the node's credential is the token in the state
// directory (enrolled, or stored there by an operator) rather than
// NODE_TOKEN or NODE_TOKEN_FILE.
func (c Credentials) stored() bool {
	return c.NodeTokenFile == "" && c.NodeToken.IsZero()
}

// NeedsEnrollment reports whether the agent has no node token yet and must
// enroll with the enrollment token before it can connect.
func (c Credentials) NeedsEnrollment() bool {
	if !c.stored() {
		return false
	}
	_, err := c.State.Token()
	return err != nil
}

// Enrolls reports whether the node's token comes from enrollment: an
// enrollment token is configured (so no node token is) and the issued
// token lives in the state directory.
func (c Credentials) Enrolls() bool {
	return !c.EnrollmentToken.IsZero() || c.EnrollmentTokenFile != ""
}

// EnrollmentTokenValue returns the enrollment token: EnrollmentToken, or
// EnrollmentTokenFile read afresh (trimmed).
func (c Credentials) EnrollmentTokenValue() (string, error) {
	if c.EnrollmentTokenFile != "" {
		tok, err := ReadToken(c.EnrollmentTokenFile)
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

// Hint tells an operator where a new node token goes when the server
// refuses the current one (rotated, revoked, node deleted).
func (c Credentials) Hint() string {
	stored := c.State.TokenPath()
	switch {
	case c.NodeTokenFile != "":
		return fmt.Sprintf("write the node's new token (PATCH /api/nodes/{id}/token) into NODE_TOKEN_FILE (%s)", c.NodeTokenFile)
	case !c.NodeToken.IsZero():
		return fmt.Sprintf("set NODE_TOKEN to the node's new token (PATCH /api/nodes/{id}/token) and restart the agent, or write it into %s", stored)
	default:
		return fmt.Sprintf("write the node's new token (PATCH /api/nodes/{id}/token) into %s; or, to enroll as a NEW node, remove %s and %s and restart the agent",
			stored, stored, c.State.KeyPath())
	}
}

// Refreshed returns the store of the tokens handed over in token_refresh.
func (c Credentials) Refreshed() RefreshedTokenFile { return RefreshedTokenFile{creds: c} }

// RefreshedTokenFile keeps the tokens the server hands over in token_refresh
// in the state directory's node-token.refreshed (0600), apart from the
// node's credential, so an unverified token never replaces the credential:
// the agent cannot check a token's signature, and a hostile server or a
// man in the middle of ws:// could otherwise plant a token that locks it
// out. The agent dials with the refreshed token while it is preferable;
// once the server has accepted it (Accepted) an enrolled agent makes it its
// stored credential, and when the server refuses it (Discard) the file is
// removed and the agent falls back to its credential. It implements
// agent.RefreshedTokenStore.
type RefreshedTokenFile struct {
	creds Credentials
}

// Path is the state directory's node-token.refreshed.
func (f RefreshedTokenFile) Path() string {
	return filepath.Join(f.creds.State.Dir, RefreshedFileName)
}

// Load returns the refreshed token kept by an earlier run, "" when none.
func (f RefreshedTokenFile) Load() (string, error) {
	tok, err := ReadToken(f.Path())
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, secret.ErrEmptyFile) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("refreshed token: %w", err)
	}
	return tok, nil
}

// Save keeps tok (atomically, mode 0600), replacing the one kept before.
func (f RefreshedTokenFile) Save(tok string) error {
	if err := f.creds.State.writeToken(RefreshedFileName, tok); err != nil {
		return fmt.Errorf("store refreshed token: %w", err)
	}
	return nil
}

// Accepted is called once the server accepted a dial with tok. When the
// node's credential is the stored token (enrolled), tok becomes it (which
// an enrolled agent's renewal needs: the server renews only from the
// node's current or previous token), and the refreshed file goes. An
// operator's NODE_TOKEN or NODE_TOKEN_FILE is never written: the file stays
// and is preferred while it is newer.
func (f RefreshedTokenFile) Accepted(tok string) error {
	if !f.creds.stored() {
		return nil
	}
	if err := f.creds.State.StoreToken(tok); err != nil {
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
