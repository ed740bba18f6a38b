package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// nodeClaims are the claims of a node token (see the team's agreed format):
// nodeId and sub are the node id, name its name, jti a random id that
// changes with every issue, exp only when NODE_TOKEN_TTL > 0.
type nodeClaims struct {
	NodeID string `json:"nodeId"`
	Name   string `json:"name"`
	jwt.RegisteredClaims
}

// Reasons a node token is refused; the WebSocket endpoint answers 401 with
// the sentence.
var (
	errTokenMissing = errors.New("missing node token")
	errTokenInvalid = errors.New("invalid node token")
	errTokenExpired = errors.New("node token expired")
	errTokenRevoked = errors.New("node token revoked: it was rotated or re-issued; use the current token")
	errNodeUnknown  = errors.New("node token names a node that does not exist (deleted?)")
)

// tokenIssuer issues and verifies node tokens.
type tokenIssuer struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// newTokenID returns a random jti.
func newTokenID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// issued is a signed node token and its times.
type issued struct {
	token     string
	jti       string
	issuedAt  time.Time
	expiresAt time.Time // zero without NODE_TOKEN_TTL
}

// expiresAtText is the token's exp as the API shows it, "" when none.
func (i issued) expiresAtText() string {
	if i.expiresAt.IsZero() {
		return ""
	}
	return i.expiresAt.UTC().Format(time.RFC3339)
}

// issueNew signs a token with a fresh jti.
func (t *tokenIssuer) issueNew(nodeID, name string) (issued, error) {
	jti, err := newTokenID()
	if err != nil {
		return issued{}, err
	}
	tok, iat, err := t.issue(nodeID, name, jti)
	if err != nil {
		return issued{}, err
	}
	i := issued{token: tok, jti: jti, issuedAt: iat}
	if t.ttl > 0 {
		i.expiresAt = iat.Add(t.ttl)
	}
	return i, nil
}

// issue returns a signed token for the node with the given jti, and its
// issue time.
func (t *tokenIssuer) issue(nodeID, name, jti string) (token string, issuedAt time.Time, err error) {
	issuedAt = t.now().Truncate(time.Second)
	claims := nodeClaims{
		NodeID: nodeID,
		Name:   name,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:  nodeID,
			IssuedAt: jwt.NewNumericDate(issuedAt),
			ID:       jti,
		},
	}
	if t.ttl > 0 {
		claims.ExpiresAt = jwt.NewNumericDate(issuedAt.Add(t.ttl))
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign node token: %w", err)
	}
	return token, issuedAt, nil
}

// verify checks the token's HS256 signature (any other algorithm, "none"
// included, is refused before the key is used) and its exp, and returns its
// claims. Whether the token is the node's current one is the caller's check.
func (t *tokenIssuer) verify(token string) (nodeClaims, error) {
	return t.parse(token, true)
}

// verifySignature is verify without the expiry checks: an enrolled agent
// renewing its EXPIRED token presents it as part of its proof.
func (t *tokenIssuer) verifySignature(token string) (nodeClaims, error) {
	return t.parse(token, false)
}

func (t *tokenIssuer) parse(token string, checkExpiry bool) (nodeClaims, error) {
	if token == "" {
		return nodeClaims{}, errTokenMissing
	}
	var c nodeClaims
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithTimeFunc(t.now)}
	if !checkExpiry {
		opts = append(opts, jwt.WithoutClaimsValidation())
	} else if t.ttl > 0 {
		// With a TTL every token must expire, including one issued before
		// the TTL was set (an enrolled agent re-enrolls for a fresh one).
		opts = append(opts, jwt.WithExpirationRequired())
	}
	_, err := jwt.ParseWithClaims(token, &c, func(tok *jwt.Token) (any, error) {
		if tok.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("unexpected signing method %v", tok.Header["alg"])
		}
		return t.key, nil
	}, opts...)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nodeClaims{}, errTokenExpired
	case err != nil:
		return nodeClaims{}, errTokenInvalid
	}
	if c.NodeID == "" || c.ID == "" || (c.Subject != "" && c.Subject != c.NodeID) {
		return nodeClaims{}, errTokenInvalid
	}
	return c, nil
}
