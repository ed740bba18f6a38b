// Package nodetoken reads what the agent needs from a node token's claims:
// the node it names, when it was issued and when it expires. The token is a
// JWT signed by the server with a key the agent does not have, so nothing
// here verifies a signature: the claims only label heartbeats and
// containers and decide which of two tokens to dial with; the server
// verifies every token itself.
//
// This is the agent's one parse of a node's identity (docs/protocol.md): heartbeats
// and the lormas.node container label both use Identity.
package nodetoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// idClaims are the claims that name the node, in order (docs/protocol.md).
var idClaims = []string{"nodeId", "sub", "id"}

// Claims are the parts of a node token the agent reads.
type Claims struct {
	NodeID    string    // nodeId, else sub, else id; "" when none
	IssuedAt  time.Time // iat; zero when absent
	ExpiresAt time.Time // exp; zero when the token does not expire
}

// maxTokenBytes bounds what Parse decodes: a node token is a few hundred
// bytes, and a token file may hold anything.
const maxTokenBytes = 64 << 10

// Parse reads the claims of a JWT without verifying it; ok is false when the
// token is not a JWT with a JSON object payload.
func Parse(token string) (c Claims, ok bool) {
	if len(token) > maxTokenBytes {
		return Claims{}, false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return Claims{}, false
	}
	for _, k := range idClaims {
		if id := idString(m[k]); id != "" {
			c.NodeID = id
			break
		}
	}
	c.IssuedAt = numericDate(m["iat"])
	c.ExpiresAt = numericDate(m["exp"])
	return c, true
}

// idString formats a claim as a node id: strings as they are, numbers as
// integers when they are whole ("42", also for 42.0 or 4.2e1), else in their
// shortest decimal form. Anything else is "".
func idString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return strconv.FormatInt(i, 10)
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return x.String()
		}
		if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return strconv.FormatInt(int64(f), 10)
		}
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return ""
}

// numericDate reads a JWT NumericDate (seconds since the epoch, possibly
// fractional); zero when absent or not a number.
func numericDate(v any) time.Time {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f <= 0 || f > 1<<40 {
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// NodeID is the node id the token's claims name, "" when none (or when the
// token is not a JWT).
func NodeID(token string) string {
	c, _ := Parse(token)
	return c.NodeID
}

// Identity is the node id the agent runs as: the token's node id, else
// NODE_ID, else NODE_NAME; never a piece of the token itself.
func Identity(token, nodeID, nodeName string) string {
	if id := NodeID(token); id != "" {
		return id
	}
	if nodeID != "" {
		return nodeID
	}
	return nodeName
}

// Expired reports whether the claims carry an expiry that is not after now.
func (c Claims) Expired(now time.Time) bool {
	return !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)
}

// Expired reports whether token is a JWT whose exp is not after now.
func Expired(token string, now time.Time) bool {
	c, ok := Parse(token)
	return ok && c.Expired(now)
}

// Bounds of a token handed over in token_refresh, by the agent's clock.
// The agent cannot check a signature, so a hostile server (or a man in the
// middle of ws://) could otherwise hand over a token "issued" in the year
// 30000 that wins every later comparison of issue times, including against
// the token an operator writes after a rotation.
const (
	// MaxFutureIssue is how far in the future a refreshed token's iat may
	// be (clock skew between server and agent).
	MaxFutureIssue = 5 * time.Minute
	// MaxLifetime bounds a refreshed token's exp - iat: token_refresh is
	// for short-lived tokens (NODE_TOKEN_TTL).
	MaxLifetime = 400 * 24 * time.Hour
)

// CheckRefreshed reports why a token with claims c cannot be a fresh token
// of node nodeID handed over at now: it must name that node (nodeID not
// empty), have an iat at most MaxFutureIssue ahead of now, and an exp after
// its iat, at most MaxLifetime later. Expiry itself is not checked (an
// expired refreshed token may still serve an enrolled agent's renewal).
// The error never contains the token.
func (c Claims) CheckRefreshed(nodeID string, now time.Time) error {
	switch {
	case c.NodeID == "":
		return errors.New("the token names no node")
	case nodeID == "":
		return errors.New("the agent's node id is not known yet")
	case c.NodeID != nodeID:
		return fmt.Errorf("the token names another node (%s, this agent runs as %s)", c.NodeID, nodeID)
	case c.IssuedAt.IsZero():
		return errors.New("the token has no issue time (iat)")
	case c.IssuedAt.After(now.Add(MaxFutureIssue)):
		return fmt.Errorf("the token's issue time %s is more than %s ahead of this host's clock", c.IssuedAt.UTC().Format(time.RFC3339), MaxFutureIssue)
	case c.ExpiresAt.IsZero():
		return errors.New("the token does not expire (token_refresh hands over tokens with an exp)")
	case !c.ExpiresAt.After(c.IssuedAt):
		return errors.New("the token expires before it was issued")
	case c.ExpiresAt.Sub(c.IssuedAt) > MaxLifetime:
		return fmt.Errorf("the token's lifetime (exp - iat) is longer than %d days", int(MaxLifetime.Hours()/24))
	}
	return nil
}

// Prefer chooses the token to dial with between a configured one (the
// node's credential: NODE_TOKEN, NODE_TOKEN_FILE or the enrolled token) and
// a newer one the server handed over in token_refresh: newer is chosen only
// when it names the same node as configured, passes CheckRefreshed, was
// issued later and has not expired by now. Anything else keeps configured:
// an operator who writes a rotated token gives it a later issue time than
// any refreshed one.
func Prefer(configured, newer string, now time.Time) string {
	if newer == "" || newer == configured {
		return configured
	}
	c, ok := Parse(configured)
	if !ok || c.NodeID == "" {
		return configured
	}
	n, ok := Parse(newer)
	if !ok || n.CheckRefreshed(c.NodeID, now) != nil || n.Expired(now) || !n.IssuedAt.After(c.IssuedAt) {
		return configured
	}
	return newer
}
