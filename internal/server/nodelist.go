package server

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/server/store"
)

// GET /api/nodes answers the plain JSON array of every node, as the seed
// did, unless the request asks for a page: then it answers one page (the
// same array shape) and, when the list goes on, a Link header with the
// next page's URL (RFC 8288, rel="next"). Query parameters:
//
//	limit=N          a page of at most N nodes (1..1000)
//	cursor=C         the page after C, the opaque position the previous page's
//	                 Link carries (a page is asked for with limit, cursor or both;
//	                 limit defaults to 100)
//	connected=BOOL   only nodes with (true) or without (false) a live session,
//	                 paginated or not
//
// The order is the node list's (creation time, then name); a walk of the
// pages returns every node that exists throughout the walk exactly once.
// With connected, a page may hold fewer than limit nodes (even none) and
// still have a next one: the walk ends when a page has no Link.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// listChunk is how many rows the full list reads at a time; it is
	// written out as it is read, so its memory does not grow with the
	// fleet.
	listChunk = 1000
)

// listQuery is a parsed GET /api/nodes query.
type listQuery struct {
	paged     bool
	limit     int
	after     *store.PageKey
	connected *bool
}

func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{limit: defaultPageSize}
	for k, v := range q {
		if len(v) != 1 {
			return lq, badRequest("query parameter %s given %d times", k, len(v))
		}
		switch k {
		case "limit":
			n, err := strconv.Atoi(v[0])
			if err != nil || n < 1 || n > maxPageSize {
				return lq, badRequest("limit must be a whole number from 1 to %d, got %q", maxPageSize, clipText(v[0], 32))
			}
			lq.paged, lq.limit = true, n
		case "cursor":
			key, err := decodeCursor(v[0])
			if err != nil {
				return lq, badRequest("cursor is not one this server issued (take it from the Link header of the previous page)")
			}
			lq.paged, lq.after = true, key
		case "connected":
			b, err := strconv.ParseBool(v[0])
			if err != nil {
				return lq, badRequest("connected must be true or false, got %q", clipText(v[0], 32))
			}
			lq.connected = &b
		default:
			return lq, badRequest("unknown query parameter %q (limit, cursor and connected are known)", clipText(k, 64))
		}
	}
	return lq, nil
}

// cursorBody is the content of a cursor: the position of the last node a
// page looked at.
type cursorBody struct {
	CreatedAt string `json:"t"`
	Name      string `json:"n"`
}

func encodeCursor(k store.PageKey) string {
	b, _ := json.Marshal(cursorBody{CreatedAt: k.CreatedAt, Name: k.Name})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*store.PageKey, error) {
	if len(s) > 2048 {
		return nil, fmt.Errorf("cursor too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var c cursorBody
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	if _, err := time.Parse(time.RFC3339Nano, c.CreatedAt); err != nil {
		return nil, err
	}
	return &store.PageKey{CreatedAt: c.CreatedAt, Name: c.Name}, nil
}

func (srv *Server) handleListNodes(w http.ResponseWriter, r *http.Request) {
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		writeErr(w, err)
		return
	}
	if !q.paged {
		srv.writeAllNodes(w, r, q.connected)
		return
	}
	nodes, next, err := srv.nodePage(r, q)
	if err != nil {
		writeErr(w, err)
		return
	}
	views := make([]nodeView, 0, len(nodes))
	for _, n := range nodes {
		views = append(views, srv.nodeView(n))
	}
	if next != nil {
		v := url.Values{"limit": {strconv.Itoa(q.limit)}, "cursor": {encodeCursor(*next)}}
		if q.connected != nil {
			v.Set("connected", strconv.FormatBool(*q.connected))
		}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, v.Encode()))
	}
	writeJSON(w, http.StatusOK, views)
}

// nodePage reads one page: the nodes after q.after that match q.connected,
// at most q.limit, and the position to continue from (nil at the end).
func (srv *Server) nodePage(r *http.Request, q listQuery) ([]store.Node, *store.PageKey, error) {
	var page []store.Node
	after := q.after
	for {
		// One row more than needed tells whether the list goes on.
		want := q.limit - len(page)
		rows, err := srv.store.NodesPage(r.Context(), after, want+1)
		if err != nil {
			return nil, nil, err
		}
		more := len(rows) > want
		if more {
			rows = rows[:want]
		}
		for _, n := range rows {
			if q.connected == nil || srv.hub.connected(n.ID) == *q.connected {
				page = append(page, n)
			}
		}
		if len(rows) > 0 {
			k := rows[len(rows)-1].Key()
			after = &k
		}
		switch {
		case !more:
			return page, nil, nil
		case len(page) == q.limit:
			return page, after, nil
		}
	}
}

// writeAllNodes answers the whole list as one JSON array, written as it is
// read. A failure after the first bytes aborts the response, so a client
// never takes a cut list for the whole.
func (srv *Server) writeAllNodes(w http.ResponseWriter, r *http.Request, connected *bool) {
	var after *store.PageKey
	started, wrote := false, 0
	for {
		rows, err := srv.store.NodesPage(r.Context(), after, listChunk)
		if err != nil {
			if !started {
				writeErr(w, err)
				return
			}
			srv.log.Error("list nodes: aborted mid-way", "err", err)
			panic(http.ErrAbortHandler)
		}
		if !started {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte{'['})
			started = true
		}
		for _, n := range rows {
			if connected != nil && srv.hub.connected(n.ID) != *connected {
				continue
			}
			b, err := json.Marshal(srv.nodeView(n))
			if err != nil {
				srv.log.Error("list nodes: encode", "err", err)
				panic(http.ErrAbortHandler)
			}
			if wrote > 0 {
				_, _ = w.Write([]byte{','})
			}
			_, _ = w.Write(b)
			wrote++
		}
		if len(rows) < listChunk {
			_, _ = w.Write([]byte("]\n"))
			return
		}
		k := rows[len(rows)-1].Key()
		after = &k
	}
}

// clipText bounds a client's text quoted in an error.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
