package secret

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got, err := ReadFile(write("token", "  "+testToken+"\r\n\n")); err != nil || got != testToken {
		t.Errorf("ReadFile = %q, %v; want the token, trimmed", got, err)
	}
	empty := write("empty", " \n")
	if _, err := ReadFile(empty); !errors.Is(err, ErrEmptyFile) || !strings.HasPrefix(err.Error(), empty+": ") {
		t.Errorf("empty file: %v, want ErrEmptyFile naming %s", err, empty)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := ReadFile(missing); !errors.Is(err, fs.ErrNotExist) || err.Error() != "open "+missing+": no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
}

// A file this process may not read (written by root, 0600, for an agent
// running as uid 65532) says whose permission is missing and the command
// that fixes it; other errors are left alone.
func TestPermissionDeniedNamesTheFix(t *testing.T) {
	denied := &fs.PathError{Op: "open", Path: "/run/secrets/node-token", Err: fs.ErrPermission}
	err := WithPermissionFix("/run/secrets/node-token", denied)
	uid := strconv.Itoa(os.Getuid())
	for _, want := range []string{
		"open /run/secrets/node-token: permission denied",
		"runs as uid " + uid,
		"sudo chown " + uid + " /run/secrets/node-token && sudo chmod 0400 /run/secrets/node-token",
		"the host file mounted at /run/secrets/node-token",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("the fix hides the permission error from errors.Is")
	}
	missing := &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}
	if got := WithPermissionFix("/x", missing); got != error(missing) {
		t.Errorf("a missing file got %v", got)
	}
}
