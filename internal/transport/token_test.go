package transport_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/server"
	"github.com/lormas/lormas-agent/internal/testsupport"
	"github.com/lormas/lormas-agent/internal/transport"
)

// TestDialTokenHeaderOnly: with TokenHeaderOnly (NODE_TOKEN_IN_QUERY=false)
// the upgrade request's URL carries no token at all, only the header does;
// the seed's default still sends both.
func TestDialTokenHeaderOnly(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	logs := &logBuffer{}
	cfg := config(t, s.URL(), logs)
	cfg.TokenHeaderOnly = true
	dial(t, s, cfg)
	dial(t, s, config(t, s.URL(), logs)) // the default

	ups := s.Upgrades()
	if len(ups) != 2 {
		t.Fatalf("got %d upgrades, want 2", len(ups))
	}
	for i, want := range []string{"", token} {
		u := ups[i]
		if got := u.Query.Get("token"); got != want || (want == "" && len(u.Query) != 0) {
			t.Errorf("upgrade %d: query %v, want token %q", i, u.Query, want)
		}
		if got := u.Header.Get("Authorization"); got != "Bearer "+token {
			t.Errorf("upgrade %d: Authorization %q, want the bearer token", i, got)
		}
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("token in the transport's logs:\n%s", logs)
	}
}

func TestSocketURL(t *testing.T) {
	u, err := endpoint.Parse("https://lormas.example/base/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := transport.SocketURL(u, "a.b+c", true), "wss://lormas.example/base/api/ws/nodes?token=a.b%2Bc"; got != want {
		t.Errorf("in query: %q, want %q", got, want)
	}
	if got, want := transport.SocketURL(u, "a.b+c", false), "wss://lormas.example/base/api/ws/nodes"; got != want {
		t.Errorf("header only: %q, want %q", got, want)
	}
}

// TestDialErrorShowsURLRedacted: a dial error names the URL, with the
// token redacted when it is in the query and absent when it is not.
func TestDialErrorShowsURLRedacted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, headerOnly := range []bool{false, true} {
		cfg := config(t, "ws://"+addr, nil)
		cfg.TokenHeaderOnly = headerOnly
		_, err := transport.Dial(context.Background(), cfg)
		if err == nil {
			t.Fatal("dial to a closed port succeeded")
		}
		want := "ws://" + addr + "/api/ws/nodes?token=REDACTED"
		if headerOnly {
			want = "ws://" + addr + "/api/ws/nodes:"
		}
		if msg := err.Error(); strings.Contains(msg, token) || !strings.Contains(msg, want) {
			t.Errorf("header only %v: dial error %q, want it to name %q and not the token", headerOnly, msg, want)
		}
	}
}

// TestHeaderOnlyAgainstLormasServer dials the real server's handler with
// the token only in the Authorization header: the server authenticates
// the node from the header, and no request it receives has the token in
// its URL.
func TestHeaderOnlyAgainstLormasServer(t *testing.T) {
	const enrollmentToken = "enrollment-token-for-the-transport-test"
	cfg, err := server.LoadConfig(map[string]string{"DATA_DIR": t.TempDir(), "ENROLLMENT_TOKEN": enrollmentToken,
		"ADMIN_TOKEN": "admin-token-for-the-transport-test"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string // request URLs as the server received them
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.RequestURI())
		mu.Unlock()
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(ts.Close)
	base, err := endpoint.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := enroll.Enroll(ctx, ts.Client(), base, enrollmentToken, enroll.Request{Name: "header-only-node"})
	if err != nil {
		t.Fatal(err)
	}

	tc := config(t, ts.URL, nil)
	tc.Token, tc.TokenHeaderOnly = node.Token, true
	tc.PingInterval, tc.ReadTimeout = 0, 0 // the defaults: the server pings at its own pace
	c, err := transport.Dial(ctx, tc)
	if err != nil {
		t.Fatalf("header-only dial refused by the Lormas server: %v", err)
	}
	go func() {
		for range c.Frames() {
		}
	}()
	_ = c.Close(transport.CloseNormal, "")

	// A token the server did not issue is refused the same way: the header
	// is what it authenticates.
	tc.Token = node.Token + "x"
	if _, err := transport.Dial(ctx, tc); !errors.Is(err, transport.ErrAuth) {
		t.Errorf("header-only dial with a wrong token: %v, want ErrAuth", err)
	}

	mu.Lock()
	defer mu.Unlock()
	sockets := 0
	for _, u := range seen {
		if strings.Contains(u, node.Token[:20]) || strings.Contains(u, "token=") {
			t.Errorf("request URL %q carries the token", u)
		}
		if strings.HasPrefix(u, endpoint.NodeSocketPath) {
			sockets++
		}
	}
	if sockets != 2 {
		t.Errorf("the server saw %d socket requests (%q), want 2", sockets, seen)
	}
}
