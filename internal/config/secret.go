package config

import (
	"fmt"
	"log/slog"
)

// redacted is what every printing path of a Secret shows.
const redacted = "REDACTED"

// Secret holds a credential (a node or enrollment token). Every way of
// printing it — fmt verbs, %#v, slog, JSON, a panic message — shows
// "REDACTED"; only Reveal returns the value, at the point where it is sent.
type Secret struct{ value string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

// Reveal returns the secret value. Call it only where the value leaves the
// process for its intended recipient (an Authorization header, a dial URL).
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

// String implements fmt.Stringer; a panic with a Secret prints this too.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer for %#v.
func (Secret) GoString() string { return `config.Secret("` + redacted + `")` }

// Format implements fmt.Formatter so that every verb (%s, %q, %x, %d, ...)
// prints the redaction, never the bytes.
func (Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = fmt.Fprint(f, Secret{}.GoString())
		return
	}
	_, _ = fmt.Fprint(f, redacted)
}

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (used by map keys, XML, and
// some encoders in preference to String).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalText implements encoding.TextUnmarshaler so that env parsing can
// fill a Secret field.
func (s *Secret) UnmarshalText(b []byte) error {
	s.value = string(b)
	return nil
}
