package envconf

import (
	"strings"

	"github.com/lormas/lormas-agent/internal/secret"
)

// Secret resolves a secret that may be given as the variable name or as
// name_FILE, the path of a file holding it (read now, surrounding
// whitespace trimmed: a file written with echo ends in a newline). Both
// set, and a file that cannot be read or is empty, are problems; the
// value's own whitespace is trimmed too. It returns the secret, zero when
// neither is set or on a problem. Problems never contain the secret.
func (p *Problems) Secret(name string, value secret.Value, file string) secret.Value {
	if file == "" {
		return secret.New(strings.TrimSpace(value.Reveal()))
	}
	if !value.IsZero() {
		p.Add(name, "set only one of %s and %s_FILE", name, name)
		return secret.Value{}
	}
	v, err := secret.ReadFile(file)
	if err != nil {
		p.Add(name+"_FILE", "%v", err)
		return secret.Value{}
	}
	return secret.New(v)
}
