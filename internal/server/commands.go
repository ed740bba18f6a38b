package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// maxCommandIDLength bounds a client-chosen command id, and maxSinceLength
// the since field (an RFC 3339 time or Unix seconds, which the agent parses;
// the protocol's Validate leaves its length open).
const (
	maxCommandIDLength = 128
	maxSinceLength     = 64
)

var errCommandTimeout = errors.New("no command_result within COMMAND_TIMEOUT")

// prepareCommand validates cmd with the protocol's own rules and gives it
// an id (a client may choose one: re-posting a command with the id of one
// that timed out asks the agent for its stored result instead of running it
// again, docs/protocol.md).
func prepareCommand(cmd *protocol.Command) error {
	cmd.Type = protocol.TypeCommand
	if err := cmd.Validate(); err != nil {
		return badRequest("%v", err)
	}
	if len(cmd.Since) > maxSinceLength {
		return badRequest("since must be an RFC 3339 time or Unix seconds, at most %d characters", maxSinceLength)
	}
	if cmd.ID == "" {
		cmd.ID = uuid.NewString()
	}
	if len(cmd.ID) > maxCommandIDLength || strings.ContainsFunc(cmd.ID, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		return badRequest("id must be at most %d characters without spaces or control characters", maxCommandIDLength)
	}
	return nil
}

// handleCommand sends a command to the node and answers with the agent's
// command_result, 200 whatever its status.
func (srv *Server) handleCommand(w http.ResponseWriter, r *http.Request) {
	// A node with a live session exists (deletion closes it): only a
	// command for a node that is not connected reads the database, to tell
	// 404 from 409.
	nodeID := r.PathValue("id")
	if srv.hub.session(nodeID) == nil {
		n, ok := srv.lookupNode(w, r)
		if !ok {
			return
		}
		nodeID = n.ID
	}
	var cmd protocol.Command
	if err := srv.decodeBody(w, r, &cmd); err != nil {
		writeErr(w, err)
		return
	}
	if cmd.Follow {
		writeError(w, http.StatusBadRequest,
			"follow is not supported here; stream logs with GET /api/nodes/{id}/containers/{containerId}/logs?follow=1")
		return
	}
	if cmd.Interactive() {
		writeError(w, http.StatusBadRequest,
			"%s with input is a session; open the WebSocket /api/nodes/{id}/containers/{containerId}/%s", cmd.Action, cmd.Action)
		return
	}
	if err := prepareCommand(&cmd); err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), srv.cfg.CommandTimeout)
	defer cancel()
	result, err := srv.dispatch(ctx, nodeID, &cmd)
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(append(result, '\n'))
	case errors.Is(err, errNotConnected):
		writeError(w, http.StatusConflict, "node %s is not connected", nodeID)
	case errors.Is(err, errCommandTimeout):
		writeJSON(w, http.StatusGatewayTimeout, struct {
			Error     string `json:"error"`
			CommandID string `json:"commandId"`
		}{fmt.Sprintf("node %s sent no result for command %s within %s; re-post with \"id\": %q to collect it",
			nodeID, cmd.ID, srv.cfg.CommandTimeout, cmd.ID), cmd.ID})
	case errors.Is(err, errShuttingDown):
		writeError(w, http.StatusServiceUnavailable, "%v", err)
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads an answer.
	default:
		writeErr(w, err)
	}
	attrs := []any{"node", nodeID, "command_id", cmd.ID, "action", cmd.Action, "container", cmd.ContainerID}
	if err != nil {
		srv.log.Warn("command got no result", append(attrs, "err", err)...)
		return
	}
	srv.log.Info("command answered", attrs...)
}

// dispatch sends cmd to the node and waits for its command_result until ctx
// ends. If the session drops meanwhile the request keeps waiting: the
// command is resent on the node's next session and the agent either runs it
// or replays the result it queued while disconnected.
func (srv *Server) dispatch(ctx context.Context, nodeID string, cmd *protocol.Command) ([]byte, error) {
	frame, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	wt := newWaiter(cmd.ID, nodeID, frame, false)
	sess, err := srv.hub.register(wt)
	if err != nil {
		return nil, err
	}
	defer srv.hub.unregister(wt)
	// A failed send (session ended) is not final: see resend.
	_ = sess.send(ctx, frame)
	select {
	case res := <-wt.result:
		return res, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, errCommandTimeout
		}
		return nil, ctx.Err()
	case <-srv.closing:
		return nil, errShuttingDown
	}
}

// handleLogs streams a container's logs as Server-Sent Events: "log" events
// ({line, stream?, timestamp?}), then one "result" event with the
// command_result. With follow=1 the agent follows the log until the
// container stops or the client disconnects (the server then sends the
// agent a cancel); a "gap" event ({lines, stream, timestamp}) marks where
// the agent dropped lines because the stream fell behind the container.
// Query: follow, lines, since, timestamps.
func (srv *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	n, ok := srv.lookupNode(w, r)
	if !ok {
		return
	}
	cmd, err := logsCommand(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	frame, err := json.Marshal(cmd)
	if err != nil {
		writeErr(w, err)
		return
	}
	wt := newWaiter(cmd.ID, n.ID, frame, cmd.Follow)
	sess, err := srv.hub.register(wt)
	switch {
	case errors.Is(err, errNotConnected):
		writeError(w, http.StatusConflict, "node %s is not connected", n.ID)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	defer srv.hub.unregister(wt)

	ls := &logStream{srv: srv, sess: sess, wt: wt}
	if !cmd.Follow {
		t := time.NewTimer(srv.cfg.CommandTimeout)
		defer t.Stop()
		ls.deadline = t.C
	}
	if err := sess.send(r.Context(), frame); err != nil {
		writeError(w, http.StatusConflict, "node %s is not connected", n.ID)
		return
	}
	out, err := startSSE(w)
	if err != nil {
		return
	}
	ls.run(r.Context(), out)
}

// logsCommand is the logs command a GET .../logs request asks for, with
// its id, or a 400 error.
func logsCommand(r *http.Request) (protocol.Command, error) {
	cmd := protocol.Command{Action: protocol.ActionLogs, ContainerID: r.PathValue("containerId")}
	q := r.URL.Query()
	var err error
	if cmd.Follow, err = queryBool(q.Get("follow")); err != nil {
		return cmd, badRequest("follow: %v", err)
	}
	if cmd.Timestamps, err = queryBool(q.Get("timestamps")); err != nil {
		return cmd, badRequest("timestamps: %v", err)
	}
	if v := q.Get("lines"); v != "" {
		lines, err := strconv.Atoi(v)
		if err != nil {
			return cmd, badRequest("lines must be a whole number, got %q", v)
		}
		cmd.Lines = &lines
	}
	cmd.Since = q.Get("since")
	return cmd, prepareCommand(&cmd)
}

// logStream turns what the agent sends for one logs command (its waiter's
// log frames and result) into the request's events.
type logStream struct {
	srv      *Server
	sess     *session         // the session the command went out on
	wt       *waiter          // wt.stream: follow
	deadline <-chan time.Time // COMMAND_TIMEOUT without follow; nil with follow
}

// run sends events until the result, the end of the session, the
// deadline, the client's departure or shutdown.
func (ls *logStream) run(ctx context.Context, out *sseWriter) {
	tick := time.NewTicker(sseKeepalive)
	defer tick.Stop()
	var reported int64
	for {
		select {
		case f := <-ls.wt.logs:
			if sendLogLines(out, f) != nil {
				ls.cancelAgent()
				return
			}
			if d := ls.wt.dropped.Load(); d > reported {
				reported = d
				_ = out.send(jsonEvent("dropped", struct {
					Frames int64 `json:"frames"`
				}{d}))
			}
		case res := <-ls.wt.result:
			ls.finish(out, res)
			return
		case <-ls.wt.lost:
			if drainLogs(out, ls.wt) != nil {
				return
			}
			_ = out.send(jsonEvent("error", apiError{Error: "node disconnected; the log stream ended"}))
			return
		case <-ls.deadline:
			_ = out.send(jsonEvent("error", apiError{Error: fmt.Sprintf("no result within %s", ls.srv.cfg.CommandTimeout)}))
			return
		case <-tick.C:
			if out.keepalive() != nil {
				ls.cancelAgent()
				return
			}
		case <-ctx.Done():
			ls.cancelAgent()
			return
		case <-ls.srv.closing:
			ls.cancelAgent()
			return
		}
	}
}

// finish sends the events of the command_result res.
func (ls *logStream) finish(out *sseWriter, res []byte) {
	// Log frames the agent sent before its result are queued already (one
	// read loop delivers both, in order): send them first.
	if drainLogs(out, ls.wt) != nil {
		return
	}
	if !ls.wt.stream {
		if sendResultLines(out, res) != nil {
			return
		}
	}
	_ = out.send(rawEvent("result", res))
}

// cancelAgent asks the agent to stop following the log: the stream ends
// before the command does.
func (ls *logStream) cancelAgent() {
	if !ls.wt.stream {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeWriteTimeout)
	defer cancel()
	_ = ls.sess.send(ctx, mustMarshal(protocol.Cancel{CommandID: ls.wt.id}))
}

// drainLogs sends the log frames already queued for wt.
func drainLogs(out *sseWriter, wt *waiter) error {
	for {
		select {
		case f := <-wt.logs:
			if err := sendLogLines(out, f); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// logLine is the payload of a "log" event.
type logLine struct {
	Line      string `json:"line"`
	Stream    string `json:"stream,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
}

// logGap is the payload of a "gap" event: lines are missing at this point
// of the stream (the agent dropped them).
type logGap struct {
	Lines     int    `json:"lines"`
	Stream    string `json:"stream,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
}

// sendLogLines turns one agent log frame (a line, or a batch in "lines")
// into one event per line, and a gap marker into a "gap" event.
func sendLogLines(out *sseWriter, frame []byte) error {
	var m protocol.LogMessage
	if err := json.Unmarshal(frame, &m); err != nil {
		return nil // decoded once already; cannot happen
	}
	if m.Gap > 0 {
		if err := out.send(jsonEvent("gap", logGap{Lines: m.Gap, Stream: m.Stream, Timestamp: m.Timestamp})); err != nil {
			return err
		}
		if m.Line == "" && len(m.Lines) == 0 {
			return nil
		}
	}
	lines := m.Lines
	if len(lines) == 0 {
		lines = []string{m.Line}
	}
	for _, l := range lines {
		if err := out.send(jsonEvent("log", logLine{Line: l, Stream: m.Stream, Timestamp: m.Timestamp})); err != nil {
			return err
		}
	}
	return nil
}

// sendResultLines sends the lines of a (non-follow) logs result as events.
func sendResultLines(out *sseWriter, frame []byte) error {
	var res struct {
		Result protocol.LogsResult `json:"result"`
	}
	if json.Unmarshal(frame, &res) != nil {
		return nil // an error result, or another shape: the result event tells
	}
	for _, l := range res.Result.Logs {
		if err := out.send(jsonEvent("log", logLine{Line: l})); err != nil {
			return err
		}
	}
	return nil
}

func queryBool(v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("want 1, 0, true or false, got %q", v)
	}
	return b, nil
}
