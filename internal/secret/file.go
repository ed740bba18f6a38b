package secret

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// ErrEmptyFile is matched (errors.Is) by ReadFile's error for a file that
// holds nothing but whitespace.
var ErrEmptyFile = errors.New("file is empty")

// ReadFile reads a secret (a token, a key) from path and trims surrounding
// whitespace: a trailing newline would break an Authorization header. An
// empty file is ErrEmptyFile. The error names the file, never its
// contents; for a file this process may not read it says whose it must be
// (the programs often run as another user, uid 65532 in the images, than
// the one who wrote the file, root with mode 0600).
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", WithPermissionFix(path, err) // *PathError: "open <path>: <reason>"
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %w", path, ErrEmptyFile)
	}
	return s, nil
}

// WithPermissionFix adds to a "permission denied" on path what to run, as
// "permission denied" alone leaves the operator guessing whose permission;
// other errors are returned as they are.
func WithPermissionFix(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return &permissionError{err: err, path: path, uid: os.Getuid(), gid: os.Getgid()}
}

// permissionError is a file this process may not read, with the fix.
type permissionError struct {
	err      error
	path     string
	uid, gid int
}

func (e *permissionError) Error() string {
	return fmt.Sprintf("%v: this process runs as uid %d (gid %d) and may not read it; "+
		"give it to that user: sudo chown %d %s && sudo chmod 0400 %s "+
		"(in a container: the host file mounted at %s)",
		e.err, e.uid, e.gid, e.uid, e.path, e.path, e.path)
}

func (e *permissionError) Unwrap() error { return e.err }
