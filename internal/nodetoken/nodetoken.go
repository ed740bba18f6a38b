// Package nodetoken reads what the agent needs from a node token's claims:
// the node it names, when it was issued and when it expires. The token is a
// JWT signed by the server with a key the agent does not have, so nothing
// here verifies a signature: the claims only label heartbeats and
// containers and decide which of two tokens to dial with; the server
// verifies every token itself.
//
// This is the agent's one parse of a node's identity (SPEC 2.4): heartbeats
// and the lormas.node container label both use Identity.
package nodetoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
)

// idClaims are the claims that name the node, in order (SPEC 2.4).
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

// Prefer chooses the token to dial with between a configured one
// (NODE_TOKEN or NODE_TOKEN_FILE) and a newer one the server handed over in
// token_refresh: newer is chosen only when both name the same node, newer
// was issued later and has not expired by now. Anything else keeps
// configured: an operator who writes a rotated token into NODE_TOKEN_FILE
// gives it a later issue time than any refreshed one.
func Prefer(configured, newer string, now time.Time) string {
	if newer == "" || newer == configured {
		return configured
	}
	n, ok := Parse(newer)
	if !ok || n.NodeID == "" || n.IssuedAt.IsZero() || n.Expired(now) {
		return configured
	}
	c, ok := Parse(configured)
	if !ok || c.NodeID != n.NodeID || !n.IssuedAt.After(c.IssuedAt) {
		return configured
	}
	return newer
}
