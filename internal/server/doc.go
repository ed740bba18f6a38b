// Package server is lormas-server, the reference Lormas control plane
// (SPEC section 8): a REST API for operators, a WebSocket endpoint for node
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
// (GeneratedAdminToken; the binary prints it once on stderr) and stores only
// its SHA-256 hash, so it cannot be shown again: set ADMIN_TOKEN to replace a
// lost one. A configured token is used as given and not stored.
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
// nothing. Note that the enrollment token can re-issue the token of any node
// by name (that is how an agent that lost its state gets back in), so it is
// as sensitive as the node tokens themselves.
//
// Admin and enrollment tokens are compared in constant time (of their
// SHA-256 hashes). Secrets are never logged; the request log has method,
// path (without the query, which may carry ?token=), status and duration.
//
// # Node tokens
//
// HS256 JWTs with claims nodeId and sub (the node id), name, iat, jti, and
// exp when NODE_TOKEN_TTL > 0. The database keeps each node's current jti:
// issuing a new token (rotation, re-enrollment) revokes the previous one.
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
//	GET    /api/nodes                  200 [node, ...]
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
//	POST   /api/nodes/enroll           Authorization: Bearer <enrollment token>, {name}
//	       201 {id, name, token} for a new node; 200 {id, name, token} when a node
//	       of that name existed: its token is re-issued (the old one revoked)
//	GET    /healthz                    200 {"status":"ok"} when the database answers
//
// # Agent WebSocket
//
// GET /api/ws/nodes with the node token in "Authorization: Bearer" or
// ?token=. The token is verified before the upgrade (HS256 only, exp, node
// exists, token is current); any failure is 401 with a JSON error. One live
// session per node: a new connection replaces the old one (closed with 4000
// "replaced by a newer connection"). The server sends {"type":"ping"} every
// PING_INTERVAL and drops an agent it has heard nothing from (frame, ping or
// pong) for three intervals. Frames larger than MAX_MESSAGE_BYTES close the
// connection (1009). agent_identify and heartbeat are stored; command_result
// answers the waiting request; log frames feed log streams; the rest go to
// event streams. Writes to an agent have a deadline, so a stalled agent
// cannot hold up API requests.
//
// # Shutdown
//
// Shutdown ends waiting requests (503) and event streams, stops listening,
// closes agent sessions with 1001 and closes the database.
package server
