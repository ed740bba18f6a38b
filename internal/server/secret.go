package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
)

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
