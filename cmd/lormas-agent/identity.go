package main

import (
	"github.com/golang-jwt/jwt/v5"
)

// nodeIDFromToken reads the node id from the node JWT's claims (nodeId,
// else sub, else id) without verifying the signature: the agent has no key,
// and the server verifies the token anyway. "" when the token is not a JWT
// or carries none of those claims.
func nodeIDFromToken(token string) string {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		return ""
	}
	for _, k := range []string{"nodeId", "sub", "id"} {
		if s, ok := claims[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}

// firstNonEmpty returns the first non-empty string.
func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
