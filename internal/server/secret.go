package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
)

const redacted = "REDACTED"

// Secret holds a credential from the configuration. Every way of printing it
// (fmt verbs, slog, JSON) shows "REDACTED"; only Reveal returns the value.
type Secret struct{ value string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer for %#v.
func (Secret) GoString() string { return "server.Secret(" + redacted + ")" }

// Format prints the redaction for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = fmt.Fprint(f, redacted) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// UnmarshalText lets caarlos0/env fill a Secret field.
func (s *Secret) UnmarshalText(b []byte) error {
	s.value = string(b)
	return nil
}

// randomToken returns prefix followed by 32 random bytes in unpadded
// base64url (256 bits). The prefix makes a leaked token recognisable to
// secret scanners and to the operator.
func randomToken(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate random token: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenHash is the SHA-256 of a token, the form in which the admin token is
// stored and compared.
func tokenHash(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// hashMatches compares a presented token with a stored hash in constant
// time: both sides are hashed to the same length first, so neither the
// length nor a common prefix of the real token leaks through timing.
func hashMatches(presented string, want [sha256.Size]byte) bool {
	got := tokenHash(presented)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
