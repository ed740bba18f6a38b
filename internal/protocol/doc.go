// Package protocol is the one definition of the Lormas node-agent wire format:
// every message the server and the agent exchange over the WebSocket, the
// result shapes of every action, validation of incoming commands, and the
// byte-size syntax of resource limits. The agent and lormas-server both import
// it; it imports nothing of ours.
//
// Compatibility rule (docs/protocol.md): every field of the seed's messages keeps
// its name, type and meaning. Additions are optional fields or new message
// types. Unknown fields are ignored when decoding.
package protocol
