package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DotEnvFile is the file in the working directory read for settings that
// the real environment does not set, as the seed's agent (run by Bun) does.
const DotEnvFile = ".env"

// maxDotEnvBytes bounds what is read from .env: a configuration file of a
// few variables is a few hundred bytes; a larger one is a mistake (or a
// device) and must not grow the agent's memory.
const maxDotEnvBytes = 1 << 20

// ErrUntrustedDotEnv is wrapped by the error for a .env file the agent
// refuses to read: a symbolic link, not a regular file, owned by someone
// other than the agent's user or root, or writable by group or others.
var ErrUntrustedDotEnv = errors.New("untrusted .env file")

// effectiveUID is the agent's user, which may own .env besides root; a
// variable so tests that do not run as root can still show a refusal.
var effectiveUID = os.Geteuid

// dotEnv is what readDotEnv found.
type dotEnv struct {
	path  string            // absolute path of the file read; "" when there is none
	vars  map[string]string // its settings
	lines []error           // its malformed lines, one error each
}

// readDotEnv reads path as a .env file. A missing file is no error: it
// returns no settings. Whoever can write .env can point the agent, node
// token included, at another server, so the file is read only when it is
// trusted (see openTrusted); an untrusted file is an error wrapping
// ErrUntrustedDotEnv, never skipped silently: ignoring it would change the
// configuration unnoticed.
func readDotEnv(path string) (dotEnv, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	f, err := openTrusted(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return dotEnv{vars: map[string]string{}}, nil
	}
	if err != nil {
		return dotEnv{vars: map[string]string{}}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDotEnvBytes+1))
	if err != nil {
		return dotEnv{vars: map[string]string{}}, fmt.Errorf("%s: %w", abs, err)
	}
	if len(b) > maxDotEnvBytes {
		return dotEnv{vars: map[string]string{}}, fmt.Errorf("%s: larger than %d bytes: not a configuration file", abs, maxDotEnvBytes)
	}
	vars, lines := parseDotEnv(abs, string(b))
	return dotEnv{path: abs, vars: vars, lines: lines}, nil
}

// openTrusted opens path for reading when it is a regular file (not a
// symbolic link, device, FIFO or directory), owned by the agent's effective
// user or root, and writable by neither group nor others. The checks are
// made on the opened descriptor (O_NOFOLLOW, then fstat), so the file
// cannot be swapped between the check and the read. A missing file is
// fs.ErrNotExist.
func openTrusted(path string) (*os.File, error) {
	// O_NONBLOCK: opening a FIFO planted as .env must not hang the agent
	// before fstat can refuse it. It does not change reads of regular files.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, symlinkError(path)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	uid := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid = int(st.Uid)
	}
	if err := checkTrust(path, fi.Mode(), uid, effectiveUID()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkTrust decides whether a file of this mode and owner may configure
// an agent running as euid; the error names the file and the fix.
func checkTrust(path string, mode fs.FileMode, uid, euid int) error {
	switch {
	case mode&fs.ModeSymlink != 0:
		return symlinkError(path)
	case !mode.IsRegular():
		return fmt.Errorf("%w: %s is not a regular file (%s): remove it", ErrUntrustedDotEnv, path, fileKind(mode))
	case uid != euid && uid != 0:
		return fmt.Errorf("%w: %s is owned by uid %d, not by this agent's user (uid %d) or root, and could redirect the agent and its token: chown %d %s && chmod go-w %s, or remove it",
			ErrUntrustedDotEnv, path, uid, euid, euid, path, path)
	case mode.Perm()&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by group or others (mode %04o) and could redirect the agent and its token: chmod go-w %s",
			ErrUntrustedDotEnv, path, mode.Perm(), path)
	}
	return nil
}

func symlinkError(path string) error {
	return fmt.Errorf("%w: %s is a symbolic link: replace it with the file itself (owned by this user or root, chmod go-w), or remove it",
		ErrUntrustedDotEnv, path)
}

func fileKind(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeDevice != 0:
		return "a device"
	}
	return "mode " + mode.String()
}

// parseDotEnv parses KEY=VALUE lines: blank lines and lines starting with #
// are skipped; "export " before the key is allowed; a value may be bare
// (an inline comment starts at " #"), 'single-quoted' (literal) or
// "double-quoted" (with \n, \r, \t, \", \\ and \$ escapes). There is no
// variable expansion and no multi-line value. Errors name the file and line
// number, and the key when it is known, never the value: a .env file
// usually holds the node token.
func parseDotEnv(name, content string) (map[string]string, []error) {
	vars := map[string]string{}
	var errs []error
	for i, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		key, value, err := parseDotEnvLine(line)
		if err != nil {
			where := fmt.Sprintf("%s line %d", name, i+1)
			if key != "" {
				where += " (" + key + ")"
			}
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		vars[key] = value
	}
	return vars, errs
}

func parseDotEnvLine(line string) (key, value string, err error) {
	if rest, ok := strings.CutPrefix(line, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
		line = strings.TrimLeft(rest, " \t")
	}
	k, v, ok := strings.Cut(line, "=")
	k = strings.TrimSpace(k)
	if !validKey(k) {
		if !ok {
			return "", "", errors.New(`want KEY=VALUE`)
		}
		return "", "", errors.New("invalid variable name: want letters, digits and _ (not starting with a digit)")
	}
	if !ok {
		return k, "", errors.New(`missing "=" after the variable name`)
	}
	v = strings.TrimLeft(v, " \t")
	if v == "" {
		return k, "", nil
	}
	var rest string
	switch v[0] {
	case '\'':
		end := strings.IndexByte(v[1:], '\'')
		if end < 0 {
			return k, "", errors.New("unterminated single quote")
		}
		value, rest = v[1:1+end], v[2+end:]
	case '"':
		value, rest, err = unquoteDouble(v[1:])
		if err != nil {
			return k, "", err
		}
	default:
		value = v
		if i := strings.Index(value, " #"); i >= 0 {
			value = value[:i]
		}
		if i := strings.Index(value, "\t#"); i >= 0 {
			value = value[:i]
		}
		return k, strings.TrimRight(value, " \t"), nil
	}
	rest = strings.TrimLeft(rest, " \t")
	if rest != "" && rest[0] != '#' {
		return k, "", errors.New("unexpected text after the closing quote")
	}
	return k, value, nil
}

// unquoteDouble reads a double-quoted value whose opening quote has been
// consumed; it returns the value and the text after the closing quote.
func unquoteDouble(s string) (value, rest string, err error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			if i+1 == len(s) {
				return "", "", errors.New("unterminated double quote")
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '"', '\\', '$', '\'':
				b.WriteByte(s[i])
			default:
				return "", "", errors.New(`unknown escape in double quotes (use \\ for a backslash)`)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated double quote")
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
