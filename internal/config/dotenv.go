package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// DotEnvFile is the file in the working directory read for settings that
// the real environment does not set, as the seed's agent (run by Bun) does.
const DotEnvFile = ".env"

// readDotEnv reads path as a .env file. A missing file is no error: it
// returns an empty map. Malformed lines are reported, one error each.
func readDotEnv(path string) (map[string]string, []error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return map[string]string{}, []error{fmt.Errorf("%s: %w", path, err)}
	}
	return parseDotEnv(path, string(b))
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
