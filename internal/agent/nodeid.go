package agent

import (
	"github.com/lormas/lormas-agent/internal/nodetoken"
)

// nodeIDFromToken reads the node id from the token's claims (nodeId, else
// sub, else id; numbers as integers) WITHOUT verifying the signature: the
// agent has no key, and the id only labels heartbeats and containers; the
// server verifies the token itself. "" when the token is not a JWT or names
// no node. It is nodetoken's parse, the one the container label uses too.
func nodeIDFromToken(token string) string { return nodetoken.NodeID(token) }

// deriveNodeID is the token's node id, else NODE_ID, else NODE_NAME; never
// a piece of the token itself.
func deriveNodeID(token, nodeID, nodeName string) string {
	return nodetoken.Identity(token, nodeID, nodeName)
}
