package agent

import (
	"strconv"

	"github.com/golang-jwt/jwt/v5"
)

// nodeIDClaims are the JWT claims that name the node, in order (SPEC 2.4).
var nodeIDClaims = []string{"nodeId", "sub", "id"}

// nodeIDFromToken reads the node id from the token's claims WITHOUT
// verifying the signature: the agent has no key, and the id only labels
// heartbeats and containers; the server verifies the token itself.
// It returns "" when the token is not a JWT or names no node.
func nodeIDFromToken(token string) string {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		return ""
	}
	for _, k := range nodeIDClaims {
		switch v := claims[k].(type) {
		case string:
			if v != "" {
				return v
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}

// deriveNodeID is the token's node id, else NODE_ID, else NODE_NAME; never
// a piece of the token itself.
func deriveNodeID(token, nodeID, nodeName string) string {
	if id := nodeIDFromToken(token); id != "" {
		return id
	}
	if nodeID != "" {
		return nodeID
	}
	return nodeName
}
