package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/server/store"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// storedNode reads a node straight from the database, past the reports
// kept in memory.
func (h *harness) storedNode(id string) store.Node {
	h.t.Helper()
	n, err := h.srv.store.Node(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func heartbeat(nodeID string, cpu float64) protocol.Heartbeat {
	return protocol.Heartbeat{NodeID: nodeID, Resources: protocol.HostResources{CPU: cpu, Memory: "1MB"}}
}

// A heartbeat is in the API at once, from memory, and in the database only
// after the flush interval.
func TestHeartbeatsInMemoryThenWrittenAtTheInterval(t *testing.T) {
	h := newHarness(t, map[string]string{"HEARTBEAT_FLUSH_INTERVAL": "300ms"})
	n := h.createNode("beating")
	a := h.connect(n.ID, n.Token)
	a.send(protocol.AgentIdentify{NodeName: "beating", Version: "9.9.9"})
	a.send(heartbeat(n.ID, 0.25))
	testsupport.WaitFor(t, "heartbeat in the API", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	v := h.node(n.ID)
	if !strings.Contains(string(v.Resources), `"cpu":0.25`) || v.AgentVersion == nil || *v.AgentVersion != "9.9.9" {
		t.Errorf("API shows resources %s, agent version %v; want the latest reports", v.Resources, v.AgentVersion)
	}
	testsupport.WaitFor(t, "heartbeat written", func() bool {
		s := h.storedNode(n.ID)
		return !s.LastHeartbeat.IsZero() && strings.Contains(string(s.Resources), `"cpu":0.25`) && s.AgentVersion == "9.9.9"
	})
	// A newer one replaces it, in the API at once and then on disk.
	a.send(heartbeat(n.ID, 0.75))
	testsupport.WaitFor(t, "newer heartbeat in the API", func() bool { return strings.Contains(string(h.node(n.ID).Resources), `"cpu":0.75`) })
	testsupport.WaitFor(t, "newer heartbeat written", func() bool { return strings.Contains(string(h.storedNode(n.ID).Resources), `"cpu":0.75`) })
}

// With a long interval nothing is written before shutdown, and everything
// is written at shutdown.
func TestHeartbeatsWrittenAtShutdown(t *testing.T) {
	dir := t.TempDir()
	h := startHarness(t, dir, map[string]string{"HEARTBEAT_FLUSH_INTERVAL": "1h"})
	var ids []string
	for i := range 3 {
		n := h.createNode(fmt.Sprintf("node-%d", i))
		ids = append(ids, n.ID)
		a := h.connect(n.ID, n.Token)
		a.send(protocol.AgentIdentify{NodeName: "n", Version: "1.0." + fmt.Sprint(i)})
		a.send(heartbeat(n.ID, float64(i)/10))
		testsupport.WaitFor(t, "heartbeat in the API", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	}
	for _, id := range ids {
		if s := h.storedNode(id); !s.LastHeartbeat.IsZero() || s.AgentVersion != "" {
			t.Fatalf("node %s written before the interval: %+v", id, s)
		}
	}
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, id := range ids {
		n, err := st.Node(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if n.LastHeartbeat.IsZero() || n.AgentVersion != "1.0."+fmt.Sprint(i) || !strings.Contains(string(n.Resources), fmt.Sprintf(`"cpu":%v`, float64(i)/10)) {
			t.Errorf("node %d after shutdown: heartbeat %v, version %q, resources %s", i, n.LastHeartbeat, n.AgentVersion, n.Resources)
		}
	}
}

// A batch that fails to be written stays pending for the next flush;
// a newer report is not overwritten by the failed one.
func TestReportsKeptWhenTheWriteFails(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	r := newReports(st, time.Hour, slog.New(slog.DiscardHandler))
	r.heartbeat("a", time.Unix(1, 0), json.RawMessage(`{"cpu":1}`))
	r.heartbeat("b", time.Unix(2, 0), json.RawMessage(`{"cpu":2}`))
	st.Close() // every write now fails
	if err := r.flush(context.Background(), 0); err == nil {
		t.Fatal("flush to a closed database succeeded")
	}
	if len(r.pending) != 2 || r.flushing != nil {
		t.Fatalf("after a failed flush: %d pending, flushing %v; want both kept", len(r.pending), r.flushing)
	}
	n := store.Node{ID: "a"}
	r.overlay(&n)
	if string(n.Resources) != `{"cpu":1}` {
		t.Errorf("overlay after a failed flush: %s", n.Resources)
	}
}

var linkNext = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// walk pages through path and returns the ids in order and the number of
// pages.
func (h *harness) walk(path string) (ids []string, pages int) {
	h.t.Helper()
	for path != "" {
		resp, body := h.request("GET", path, nil, testAdminToken)
		if resp.StatusCode != http.StatusOK {
			h.t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
		var page []nodeView
		decode(h.t, body, &page)
		for _, v := range page {
			ids = append(ids, v.ID)
		}
		pages++
		path = ""
		if l := resp.Header.Get("Link"); l != "" {
			m := linkNext.FindStringSubmatch(l)
			if m == nil {
				h.t.Fatalf("Link header %q", l)
			}
			path = m[1]
		}
		if pages > 1000 {
			h.t.Fatal("the walk does not end")
		}
	}
	return ids, pages
}

func TestNodeListPagination(t *testing.T) {
	h := newHarness(t, nil)
	var all []string
	for i := range 23 {
		all = append(all, h.createNode(fmt.Sprintf("p-%02d", i)).ID)
	}
	// The full list is still the plain array, in creation order.
	var full []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &full)
	var fullIDs []string
	for _, v := range full {
		fullIDs = append(fullIDs, v.ID)
	}
	if !slices.Equal(fullIDs, all) {
		t.Fatalf("full list %v\nwant %v", fullIDs, all)
	}
	for _, limit := range []int{1, 5, 7, 23, 100} {
		ids, pages := h.walk(fmt.Sprintf("/api/nodes?limit=%d", limit))
		if !slices.Equal(ids, all) {
			t.Errorf("limit %d: walk %v\nwant %v", limit, ids, all)
		}
		if want := (len(all) + limit - 1) / limit; pages != want {
			t.Errorf("limit %d: %d pages, want %d", limit, pages, want)
		}
	}

	// A node created during a walk shows up once, at the end.
	resp, body := h.request("GET", "/api/nodes?limit=10", nil, testAdminToken)
	var first []nodeView
	decode(t, body, &first)
	late := h.createNode("p-late").ID
	rest, _ := h.walk(linkNext.FindStringSubmatch(resp.Header.Get("Link"))[1])
	var got []string
	for _, v := range first {
		got = append(got, v.ID)
	}
	got = append(got, rest...)
	if want := append(slices.Clone(all), late); !slices.Equal(got, want) {
		t.Errorf("walk with a node created on the way: %v\nwant %v", got, want)
	}
}

func TestNodeListConnectedFilter(t *testing.T) {
	h := newHarness(t, nil)
	var connected, disconnected []string
	for i := range 9 {
		n := h.createNode(fmt.Sprintf("c-%d", i))
		if i%3 == 1 {
			h.connect(n.ID, n.Token)
			connected = append(connected, n.ID)
		} else {
			disconnected = append(disconnected, n.ID)
		}
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"connected=true", connected},
		{"connected=false", disconnected},
		{"connected=true&limit=1", connected},
		{"connected=false&limit=2", disconnected},
		{"limit=4&connected=1", connected},
	} {
		ids, _ := h.walk("/api/nodes?" + c.query)
		if !slices.Equal(ids, c.want) {
			t.Errorf("%s: %v, want %v", c.query, ids, c.want)
		}
	}
	// The filter keeps each node's view whole.
	var views []nodeView
	decode(t, h.admin("GET", "/api/nodes?connected=true", nil, http.StatusOK), &views)
	for _, v := range views {
		if !v.Connected || v.Name == "" {
			t.Errorf("connected=true returned %+v", v)
		}
	}
}

func TestNodeListBadQueries(t *testing.T) {
	h := newHarness(t, nil)
	h.createNode("only")
	for _, q := range []string{
		"limit=0", "limit=1001", "limit=ten", "limit=-1", "limit=1&limit=2",
		"cursor=not-a-cursor", "cursor=" + encodeCursorText(`{"t":"yesterday","n":"x"}`),
		"connected=maybe", "page=2", "limt=10",
	} {
		resp, body := h.request("GET", "/api/nodes?"+q, nil, testAdminToken)
		if resp.StatusCode != http.StatusBadRequest || errorOf(t, body) == "" {
			t.Errorf("?%s = %d %s, want 400 with an error", q, resp.StatusCode, body)
		}
	}
	if resp, _ := h.request("GET", "/api/nodes?limit=5", nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("pagination without the admin token: %d", resp.StatusCode)
	}
}

func encodeCursorText(s string) string {
	return strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(base64Std(s)), "=")
}

// The memory of a connected agent: an idle session holds one goroutine,
// its read loop; the writer runs only while frames are queued, the token
// lifetime is a timer and pings come from the hub's pinger.
func TestIdleSessionsHoldOneGoroutine(t *testing.T) {
	h := newHarness(t, map[string]string{"NODE_TOKEN_TTL": "1h", "PING_INTERVAL": "200ms"})
	const agents = 10
	var conns []*testAgent
	for i := range agents {
		n := h.createNode(fmt.Sprintf("idle-%d", i))
		a := h.connect(n.ID, n.Token)
		a.send(protocol.AgentIdentify{NodeName: "idle", Version: "t", Capabilities: []string{protocol.CapabilityTokenRefresh}})
		conns = append(conns, a)
	}
	for _, a := range conns { // pings went out: their writers ran
		select {
		case <-a.pings:
		case <-time.After(waitLimit):
			t.Fatalf("no ping within %s", waitLimit)
		}
	}
	count := func(fn string) int { return len(testsupport.Goroutines(fn)) }
	// A ping's writer runs for a moment every tick of the pinger: wait for
	// a moment without one (a goroutine that stayed would never give it).
	testsupport.WaitFor(t, "no session goroutine besides the read loops", func() bool {
		return count("internal/server.(*session).") == 0
	})
	// The test agents' own read loops run in this process too.
	if got := count("internal/server.(*hub).start.func"); got != agents {
		t.Errorf("%d server read loops for %d agents", got, agents)
	}
	if got := count("internal/server.(*session).lifetime"); got != 0 {
		t.Errorf("%d lifetime goroutines, want none (timers)", got)
	}
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// The heartbeat fast path keeps protocol.Decode's checks: a heartbeat whose
// fields have the wrong types is not recorded, a good one after it is.
func TestMalformedHeartbeatsNotRecorded(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("picky")
	a := h.connect(n.ID, n.Token)
	for _, bad := range []string{
		`{"type":"heartbeat","resources":"lots"}`,
		`{"type":"heartbeat","resources":{"cpu":"high"}}`,
		`{"type":"heartbeat","nodeId":7,"resources":{"cpu":0.1}}`,
		`{"type":"heartbeat","timestamp":{},"resources":{"cpu":0.1}}`,
	} {
		a.send([]byte(bad))
	}
	// Frames are handled in order: once the identify shows, the bad
	// heartbeats have been handled.
	a.send(protocol.AgentIdentify{NodeName: "picky", Version: "sync"})
	testsupport.WaitFor(t, "identify", func() bool { v := h.node(n.ID); return v.AgentVersion != nil && *v.AgentVersion == "sync" })
	if v := h.node(n.ID); v.LastHeartbeat != nil || string(v.Resources) != "null" {
		t.Fatalf("a malformed heartbeat was recorded: %v %s", v.LastHeartbeat, v.Resources)
	}
	a.send([]byte(`{"type":"heartbeat","nodeId":"x","resources":{"cpu":0.5,"extra":{"newer":"field"}}}`))
	testsupport.WaitFor(t, "good heartbeat", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	if got := string(h.node(n.ID).Resources); got != `{"cpu":0.5,"extra":{"newer":"field"}}` {
		t.Errorf("resources %s, want the good heartbeat's, raw", got)
	}
	if !strings.Contains(h.logs.String(), "malformed frame from agent") {
		t.Error("malformed heartbeats were not reported")
	}
}
