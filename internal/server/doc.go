// Package server is lormas-server, the reference Lormas control plane
// (docs/api.md): a REST API for operators, a WebSocket endpoint for node
// agents, and SQLite storage (package store). It shares only package
// protocol with the agent, and never touches a Docker engine.
//
// # Running it in-process
//
//	cfg, err := server.LoadConfig(map[string]string{"DATA_DIR": dir, "ADMIN_TOKEN": admin})
//	srv, err := server.New(cfg, logger)
//	go srv.Serve(ln)            // or httptest.NewServer(srv.Handler())
//	defer srv.Close()
//
// # Credentials
//
// Admin token (ADMIN_TOKEN[_FILE]): bearer token for every /api route except
// enrollment and the agent socket. When unset, the first start generates one
// (GeneratedAdminToken), stores its SHA-256 hash in the database and writes
// the token to DATA_DIR/admin-token (mode 0600), where `lormas-server
// admin-token` reads it again; the operator may delete that file, and a
// later start deletes it when it no longer holds the stored token. Set
// ADMIN_TOKEN to replace a lost one. A configured token is used as given and
// not stored.
//
// JWT secret (JWT_SECRET[_FILE]): the HS256 key of node tokens. When unset,
// 32 random bytes are generated on first start and kept in the database.
//
// Enrollment token (ENROLLMENT_TOKEN[_FILE]): lets an agent register itself
// by name. When unset one is generated, kept in the database and written at
// every start to ENROLLMENT_TOKEN_EXPORT_FILE (default
// DATA_DIR/enrollment-token) with mode 0640. The export exists so compose can
// share just that file with agents through its own volume, without giving
// them DATA_DIR (which holds the JWT secret). 0640 rather than 0600 because
// the reader is another process: in the shipped images server and agent both
// run as uid/gid 65532 so the owner bit suffices, and the group bit lets an
// agent running under another uid in the same group read it; "other" gets
// nothing. The enrollment token lets a machine become a NEW node; it never
// obtains, replaces or revokes an existing node's token (see Enrollment).
//
// Admin and enrollment tokens are compared in constant time (of their
// SHA-256 hashes). Secrets are never logged; the request log has method,
// path (without the query, which may carry ?token=), status and duration.
//
// # Node tokens
//
// HS256 JWTs with claims nodeId and sub (the node id), name, iat, jti, and
// exp when NODE_TOKEN_TTL > 0. The database keeps each node's current jti
// and the one its last refresh replaced (valid until its own exp, so an
// agent that missed the token_refresh message is not locked out); rotation
// and re-enrollment revoke both.
//
// # Enrollment
//
// POST /api/nodes/enroll creates NEW nodes. An agent sends its Ed25519
// public key with a proof (an Ed25519 signature of protocol.EnrollProofMessage:
// "lormas-enroll-v1\n<name>\n<base64 public key>\n<unix seconds>"), and the
// node keeps the key. An existing name is answered 409 unless the request is
// signed by that node's key with a timestamp within ±5 minutes of the
// server's clock and later than the last one accepted for the node; nodes
// created by an administrator (or enrolled without a key) have none, so
// their name can never be enrolled. Even with a valid proof a CONNECTED
// node is not re-issued (409): an enrollment never knocks an agent off. A
// renewal (nodeId and token in the request) re-issues the token of that
// node only, for the node's current or previous token (signature checked,
// expiry not): it never creates a node (404 for a deleted one) and never
// undoes a rotation (409).
//
// # Audit and rate limits
//
// Every issued token (create, enroll, reenroll, renew, rotate, refresh) is an
// audit line "node token issued" (component=audit, event, node, name,
// remote, expiresAt); every refused enrollment "enrollment refused" and
// refused node token "node token refused" (reason, name, node, remote,
// detail). No line carries a token or key material. Refusals count against
// the client address (r.RemoteAddr, IPv6 by /64; X-Forwarded-For is not
// trusted): a token bucket of AUTH_FAILURE_BURST (10), refilled one per
// AUTH_FAILURE_INTERVAL (6 s); an address with an empty bucket gets 429 with
// Retry-After before any work. Per address the first refusal of a minute is
// logged in full, the rest in one summary line a minute ("authentication
// failures from client address (summary)": failures, rateLimited, reasons),
// and their request log lines go to debug. At most 10,000 addresses are
// tracked (least recently seen evicted first); idle ones are forgotten.
//
// # REST API
//
// Errors are JSON {"error": "sentence"} with the fitting status: 400 invalid
// JSON, a field of the wrong type, an unknown field, or a command that fails
// protocol validation (the validation sentence); 401 missing or wrong token
// (or a scheme other than Bearer); 404 unknown node or route; 405 wrong method
// (with Allow); 409 duplicate name or node not connected; 413 body larger than
// MAX_BODY_BYTES; 415 a Content-Type other than JSON; 503 shutting down.
// Times are RFC 3339 UTC with milliseconds.
//
//	POST   /api/nodes                  {name, description}
//	       201 {id, name, description, token, createdAt}
//	       name: 1..253 characters, unique (409 when taken)
//	GET    /api/nodes                  200 [node, ...]: every node; ?limit=N (1..1000)
//	       and/or ?cursor=C ask for one page instead (Link: <next>; rel="next"
//	       while the list goes on), ?connected=true|false filters (nodelist.go)
//	GET    /api/nodes/{id}             200 node
//	       node = {id, name, description, createdAt, connected, lastHeartbeat
//	       (null before the first), resources (the last heartbeat's, null
//	       before), agentVersion (null before agent_identify), agent
//	       {hostname, os, arch, engine, capabilities, protocolVersion, ...},
//	       tokenIssuedAt}
//	DELETE /api/nodes/{id}             204; a live session is closed (4003 "node deleted")
//	PATCH  /api/nodes/{id}/token       200 {id, token}; the old token is refused from
//	       now on and a session using it is closed (4001 "token rotated")
//	POST   /api/nodes/{id}/commands    {action, containerId, eggConfig, resources,
//	       environment, lines, timeout, signal, since, timestamps, id?}
//	       200 the agent's command_result {type, commandId, status, result,
//	       error, code, warnings}, whatever its status; 404 unknown node;
//	       409 not connected; 504 {error, commandId} when no result came within
//	       COMMAND_TIMEOUT. If the agent reconnects meanwhile the command is
//	       resent on the new session (the agent runs a command id only once and
//	       replays its result), and re-posting with "id" set to the commandId of
//	       a 504 collects a late result the same way.
//	GET    /api/nodes/{id}/events      text/event-stream: "node" (the node object)
//	       first, then connect, disconnect, agent_identify, heartbeat,
//	       command_result, command_progress, container_event, inventory (data:
//	       the agent's message); "error" then end when the client falls behind.
//	GET    /api/nodes/{id}/containers/{containerId}/logs?follow=1&lines=N&since=T&timestamps=1
//	       text/event-stream of "log" events {line, stream, timestamp} and a
//	       final "result" event (the command_result); with follow the stream
//	       runs until the container stops, and a client disconnect sends the
//	       agent a cancel. "gap" {lines, stream, timestamp} marks where the
//	       agent dropped lines because the stream fell behind the container;
//	       "dropped" {frames} reports log frames dropped for a client too slow
//	       to keep up; "error" ends a stream whose node disconnected.
//	POST   /api/nodes/enroll           Authorization: Bearer <enrollment token>,
//	       {name, publicKey?, timestamp?, signature?, nodeId?, token?}
//	       201 {id, name, token, expiresAt?} for a new node; 200 (same shape)
//	       when an existing node's token was re-issued to a request proving
//	       its key (the old tokens revoked); 409 the name exists and the
//	       request does not prove it, or the node is connected; 404 a renewed
//	       node does not exist; 400 a malformed or stale proof; 429 too many
//	       failures from the client address (Retry-After). See Enrollment.
//	GET    /healthz                    200 {"status":"ok"} when the database answers
//
// # Agent WebSocket
//
// GET /api/ws/nodes with the node token in "Authorization: Bearer" or
// ?token=. The token is verified before the upgrade (HS256 only, exp, node
// exists, token is current or the one before the last refresh); any failure
// is 401 with a JSON error (429 once the client address's failure budget is
// spent). A session ends when its token expires: closed with 4001 "token
// expired" (4001 "token rotated" after a rotation, 4003 "node deleted"). An
// agent that announced the token_refresh capability in agent_identify is
// sent {"type":"token_refresh","token","expiresAt"} after 2/3 of its token's
// lifetime (at least 1 s before exp), and the session follows the new
// token. One live
// session per node: a new connection replaces the old one (closed with 4000
// "replaced by a newer connection"). The server sends {"type":"ping"} every
// PING_INTERVAL and drops an agent it has heard nothing from (frame, ping or
// pong) for three intervals. Frames larger than MAX_MESSAGE_BYTES close the
// connection (1009). agent_identify and heartbeat are kept in memory and
// written to the database in batches every HEARTBEAT_FLUSH_INTERVAL and at
// shutdown (heartbeats.go); command_result
// answers the waiting request; log frames feed log streams; the rest go to
// event streams. Writes to an agent have a deadline, so a stalled agent
// cannot hold up API requests.
//
// # Shutdown
//
// Shutdown ends waiting requests (503) and event streams, stops listening,
// closes agent sessions with 1001 and closes the database.
package server
