// Package secret holds credentials (tokens, keys) so that no printing path
// can show them: fmt verbs, %#v, slog, JSON and panic messages all print
// "REDACTED"; ReadFile reads one from a file without ever echoing it. The
// agent's and the server's configurations both use it.
package secret

import (
	"fmt"
	"log/slog"
)

// redacted is what every printing path of a Secret shows.
const redacted = "REDACTED"

// Value holds a credential (a node, enrollment or admin token). Every way of
// printing it — fmt verbs, %#v, slog, JSON, a panic message — shows
// "REDACTED"; only Reveal returns the value, at the point where it is sent.
type Value struct{ value string }

// New wraps s.
func New(s string) Value { return Value{value: s} }

// Reveal returns the secret value. Call it only where the value leaves the
// process for its intended recipient (an Authorization header, a dial URL).
func (s Value) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Value) IsZero() bool { return s.value == "" }

// String implements fmt.Stringer; a panic with a Value prints this too.
func (Value) String() string { return redacted }

// GoString implements fmt.GoStringer for %#v.
func (Value) GoString() string { return `secret.Value("` + redacted + `")` }

// Format implements fmt.Formatter so that every verb (%s, %q, %x, %d, ...)
// prints the redaction, never the bytes.
func (Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = fmt.Fprint(f, Value{}.GoString())
		return
	}
	_, _ = fmt.Fprint(f, redacted)
}

// LogValue implements slog.LogValuer.
func (Value) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (Value) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (used by map keys, XML, and
// some encoders in preference to String).
func (Value) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalText implements encoding.TextUnmarshaler so that env parsing can
// fill a Value field.
func (s *Value) UnmarshalText(b []byte) error {
	s.value = string(b)
	return nil
}
