package enroll

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lormas/lormas-agent/internal/secret"
)

// Files in the state directory.
const (
	// TokenFileName holds the node's token: issued at enrollment (and
	// renewed since), or written there by an operator.
	TokenFileName = "node-token"
	// RefreshedFileName holds the newest token the server handed over in
	// token_refresh, until a dial proves it genuine (RefreshedTokenFile).
	RefreshedFileName = "node-token.refreshed"
	// KeyFileName holds the node's Ed25519 private key (PKCS #8, PEM),
	// made at the first enrollment. It proves the node's identity when its
	// token is re-issued; it never leaves the machine.
	KeyFileName = "node-key"
)

// Modes of the state files and of the state directory: the agent's user
// alone may read them.
const (
	fileMode     = 0o600
	stateDirMode = 0o700
)

// ErrNoToken means no node token is configured or stored: the agent must
// enroll first.
var ErrNoToken = errors.New("no node token: set NODE_TOKEN or NODE_TOKEN_FILE, or enroll with ENROLLMENT_TOKEN")

// State is the agent's state directory (STATE_DIR) and the files enrollment
// keeps in it: the node token (TokenFileName), the newest refreshed token
// (RefreshedFileName) and the node key (KeyFileName), each mode 0600 in a
// directory created with mode 0700, each written atomically (a temporary
// file renamed or linked into place), so a crash never leaves half a token
// or key behind.
type State struct {
	Dir string
}

// TokenPath is Dir/node-token.
func (s State) TokenPath() string { return filepath.Join(s.Dir, TokenFileName) }

// Token reads the stored node token; ErrNoToken (wrapped) when there is
// none.
func (s State) Token() (string, error) {
	tok, err := ReadToken(s.TokenPath())
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, secret.ErrEmptyFile) {
		return "", fmt.Errorf("%w (%s: %w)", ErrNoToken, s.TokenPath(), err)
	}
	if err != nil {
		return "", fmt.Errorf("stored token: %w", err)
	}
	return tok, nil
}

// StoreToken writes tok to Dir/node-token, replacing the token stored
// before.
func (s State) StoreToken(tok string) error {
	if err := s.writeToken(TokenFileName, tok); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	return nil
}

// writeToken writes tok and a newline to Dir/name, replacing the file.
func (s State) writeToken(name, tok string) error {
	if err := CheckToken(tok); err != nil {
		return fmt.Errorf("token %w", err)
	}
	return s.write(name, []byte(tok+"\n"), true)
}

// write writes data to Dir/name with mode 0600 (Dir created 0700)
// atomically. replace false keeps a file that exists already (the error is
// then fs.ErrExist): two starts racing to make a key keep the first.
func (s State) write(name string, data []byte, replace bool) error {
	if err := os.MkdirAll(s.Dir, stateDirMode); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.Dir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after a rename; the link's source
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
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
	if replace {
		return os.Rename(f.Name(), filepath.Join(s.Dir, name))
	}
	// Link, not rename: fails with EEXIST instead of replacing a file
	// another process stored meanwhile.
	return os.Link(f.Name(), filepath.Join(s.Dir, name))
}

// ReadToken reads a token file (NODE_TOKEN_FILE, ENROLLMENT_TOKEN_FILE, a
// stored token), trimmed (secret.ReadFile), and refuses a token that could
// not travel in a header unchanged. The error names the file, never its
// contents.
func ReadToken(path string) (string, error) {
	tok, err := secret.ReadFile(path)
	if err != nil {
		return "", err
	}
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("%s: token %w", path, err)
	}
	return tok, nil
}

// CheckToken refuses a token that could not travel in a header or a query
// string unchanged. It never includes the token in its error.
func CheckToken(tok string) error {
	if strings.TrimSpace(tok) != tok {
		return errors.New("has leading or trailing whitespace")
	}
	if strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("contains whitespace or control characters")
	}
	return nil
}
