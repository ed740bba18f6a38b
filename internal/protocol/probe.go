package protocol

// ProbeHeader marks an upgrade request to the node socket (/api/ws/nodes) as
// a check of the node token, not a session: `lormas-agent doctor` sends it
// ("X-Lormas-Probe: 1") so that checking a live node does not disconnect its
// running agent. A server that knows the header authenticates the token
// exactly as for a session, completes the upgrade (so proxies in between are
// checked too) and closes at once with code 1000 and ProbeCloseReason,
// without touching the node's session. A server that does not know it takes
// the request for a session; doctor then says so.
const ProbeHeader = "X-Lormas-Probe"

// ProbeCloseReason is the close reason of an answered probe.
const ProbeCloseReason = "probe: node token accepted"
