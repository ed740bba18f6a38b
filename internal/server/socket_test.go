package server

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// upgradeRequest sends a WebSocket handshake by hand so the refusal's body
// can be read.
func (h *harness) upgradeRequest(t *testing.T, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", h.url+"/api/ws/nodes?token="+token, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")))
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp, readAll(t, resp)
}

func signClaims(t *testing.T, method jwt.SigningMethod, key any, c nodeClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSocketRejectsBadTokensBeforeUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("ws-auth")
	gone := h.createNode("ws-gone")
	h.admin("DELETE", "/api/nodes/"+gone.ID, nil, http.StatusNoContent)
	rotated := h.createNode("ws-rotated")
	h.admin("PATCH", "/api/nodes/"+rotated.ID+"/token", nil, http.StatusOK)

	// Claims identical to the real token's, to sign in other ways.
	var real nodeClaims
	if _, _, err := jwt.NewParser().ParseUnverified(n.Token, &real); err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	noneToken := signClaims(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, real)
	rs256 := signClaims(t, jwt.SigningMethodRS256, rsaKey, real)
	otherKey := signClaims(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-0123456789"), real)
	hs512 := signClaims(t, jwt.SigningMethodHS512, h.srv.creds.jwtKey, real)
	expiredClaims := real
	expiredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
	expired := signClaims(t, jwt.SigningMethodHS256, h.srv.creds.jwtKey, expiredClaims)
	unknownClaims := real
	unknownClaims.NodeID, unknownClaims.Subject = "00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"
	unknown := signClaims(t, jwt.SigningMethodHS256, h.srv.creds.jwtKey, unknownClaims)
	mismatchClaims := real
	mismatchClaims.Subject = "someone-else"
	mismatch := signClaims(t, jwt.SigningMethodHS256, h.srv.creds.jwtKey, mismatchClaims)
	staleClaims := real
	staleClaims.ID = "not-the-current-jti"
	stale := signClaims(t, jwt.SigningMethodHS256, h.srv.creds.jwtKey, staleClaims)
	parts := strings.Split(n.Token, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"nodeId":"`+n.ID+`","jti":"x"}`)) + "." + parts[2]

	cases := []struct {
		name, token, wantErr string
	}{
		{"missing", "", "missing node token"},
		{"garbage", "not-a-jwt", "invalid node token"},
		{"bad signature", otherKey, "invalid node token"},
		{"tampered payload", tampered, "invalid node token"},
		{"alg none", noneToken, "invalid node token"},
		{"RS256 header", rs256, "invalid node token"},
		{"HS512 with the right key", hs512, "invalid node token"},
		{"expired", expired, "node token expired"},
		{"unknown node", unknown, "does not exist"},
		{"sub differs from nodeId", mismatch, "invalid node token"},
		{"deleted node", gone.Token, "does not exist"},
		{"rotated token", rotated.Token, "revoked"},
		{"not the current jti", stale, "revoked"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, data := h.upgradeRequest(t, c.token)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status = %d %s, want 401", resp.StatusCode, data)
			}
			if got := errorOf(t, data); !strings.Contains(got, c.wantErr) {
				t.Errorf("error = %q, want it to contain %q", got, c.wantErr)
			}
		})
	}

	// The real agent-side view: gws reports the 401 with the response.
	_, resp, err := h.dial(rotated.Token, dialOptions{})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("gws dial with a rotated token = %v, %v; want a 401 refusal", err, resp)
	}
	if h.srv.hub.connected(n.ID) || h.srv.hub.connected(rotated.ID) {
		t.Errorf("a refused token left a session")
	}
}

func TestSocketTokenInHeaderOrQuery(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("both-ways")
	for _, o := range []dialOptions{{header: true}, {query: true}} {
		a, _, err := h.dial(n.Token, o)
		if err != nil {
			t.Fatalf("dial %+v: %v", o, err)
		}
		testsupport.WaitFor(t, "connected", func() bool { return h.srv.hub.connected(n.ID) })
		_ = a.conn.WriteClose(1000, nil)
		testsupport.WaitFor(t, "disconnected", func() bool { return !h.srv.hub.connected(n.ID) })
	}
}

func TestSocketRequiresUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("plain-get")
	resp, data := h.request("GET", "/api/ws/nodes", nil, n.Token)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorOf(t, data), "WebSocket upgrade") {
		t.Errorf("plain GET = %d %s, want 400 asking for an upgrade", resp.StatusCode, data)
	}
}

func TestSocketExpiredTokenTTL(t *testing.T) {
	h := newHarness(t, map[string]string{"NODE_TOKEN_TTL": "1h"})
	n := h.createNode("ttl")
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(n.Token, claims); err != nil {
		t.Fatal(err)
	}
	exp, iat := claims["exp"].(float64), claims["iat"].(float64)
	if exp-iat != 3600 {
		t.Errorf("exp - iat = %v, want 3600", exp-iat)
	}
	h.connect(n.ID, n.Token)
	// Two hours later the same token is refused.
	h.srv.setClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	resp, data := h.upgradeRequest(t, n.Token)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(errorOf(t, data), "expired") {
		t.Errorf("expired token: %d %s, want 401 expired", resp.StatusCode, data)
	}
}

func TestSecondSessionReplacesFirst(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("twice")
	first := h.connect(n.ID, n.Token)
	second := h.connect(n.ID, n.Token)
	code, reason := first.waitClosed()
	if code != closeReplaced || !strings.Contains(reason, "replaced") {
		t.Errorf("first session closed with %d %q, want %d replaced", code, reason, closeReplaced)
	}
	if !h.srv.hub.connected(n.ID) {
		t.Fatalf("node not connected after the replacement")
	}
	// Commands go to the second session.
	done := make(chan []byte)
	go func() {
		_, data := h.request("POST", "/api/nodes/"+n.ID+"/commands", map[string]any{"action": "start", "containerId": "c1"}, testAdminToken)
		done <- data
	}()
	cmd := second.command()
	second.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgStarted}, nil))
	if got := <-done; !strings.Contains(string(got), protocol.MsgStarted) {
		t.Errorf("command result = %s", got)
	}
}

func TestRotationClosesLiveSession(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("rotate-me")
	a := h.connect(n.ID, n.Token)

	var rotated struct{ ID, Token string }
	decode(t, h.admin("PATCH", "/api/nodes/"+n.ID+"/token", nil, http.StatusOK), &rotated)
	if rotated.ID != n.ID || rotated.Token == "" || rotated.Token == n.Token {
		t.Fatalf("rotation answer = %+v", rotated)
	}
	code, reason := a.waitClosed()
	if code != closeTokenRotated || reason != "token rotated" {
		t.Errorf("live session closed with %d %q, want 4001 \"token rotated\"", code, reason)
	}
	if resp, data := h.upgradeRequest(t, n.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("old token after rotation: %d %s, want 401", resp.StatusCode, data)
	}
	h.connect(n.ID, rotated.Token)
	if !h.node(n.ID).Connected {
		t.Errorf("node not connected with the new token")
	}
}

func TestDeleteClosesLiveSession(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("delete-me")
	a := h.connect(n.ID, n.Token)
	h.admin("DELETE", "/api/nodes/"+n.ID, nil, http.StatusNoContent)
	if code, reason := a.waitClosed(); code != closeNodeDeleted {
		t.Errorf("session closed with %d %q, want %d", code, reason, closeNodeDeleted)
	}
	if resp, _ := h.upgradeRequest(t, n.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("deleted node's token: %d, want 401", resp.StatusCode)
	}
}

func TestIdentifyAndHeartbeatAreStored(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("reporting")
	a := h.connect(n.ID, n.Token)
	a.send(protocol.AgentIdentify{NodeName: "reporting", Version: "1.4.2", ProtocolVersion: 1,
		Capabilities: []string{"kill"}, Hostname: "host-a", OS: "linux", Arch: "amd64",
		Engine: &protocol.EngineInfo{Version: "20.10.24", APIVersion: "1.41"}})
	a.send([]byte(`{"type":"heartbeat","nodeId":"` + n.ID + `","timestamp":"2024-01-01T00:00:00Z",
		"resources":{"cpu":0.42,"memory":"512MB","memoryTotalBytes":1024,"futureField":7}}`))
	testsupport.WaitFor(t, "heartbeat stored", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	v := h.node(n.ID)
	if !v.Connected || v.AgentVersion == nil || *v.AgentVersion != "1.4.2" {
		t.Errorf("node = %+v, want connected with agentVersion 1.4.2", v)
	}
	for _, want := range []string{`"cpu":0.42`, `"memory":"512MB"`, `"memoryTotalBytes":1024`, `"futureField":7`} {
		if !strings.Contains(string(v.Resources), want) {
			t.Errorf("resources = %s, want %s", v.Resources, want)
		}
	}
	for _, want := range []string{`"hostname":"host-a"`, `"apiVersion":"1.41"`, `"protocolVersion":1`} {
		if !strings.Contains(string(v.Agent), want) {
			t.Errorf("agent = %s, want %s", v.Agent, want)
		}
	}
	// The server's receive time, not the agent's clock.
	if got, _ := time.Parse(time.RFC3339, *v.LastHeartbeat); time.Since(got) > time.Minute {
		t.Errorf("lastHeartbeat = %s, want the receive time", *v.LastHeartbeat)
	}
	_ = a.conn.WriteClose(1000, nil)
	testsupport.WaitFor(t, "disconnected", func() bool { return !h.node(n.ID).Connected })
}

// Heartbeats the scan leaves to the general path (keys in another case,
// a type written with escapes) are stored as encoding/json reads them: the
// resources object as sent, fields this server does not know included.
func TestHeartbeatsOutsideTheScanAreStored(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("unusual")
	a := h.connect(n.ID, n.Token)
	for i, frame := range []string{
		`{"type":"heartbeat","NodeId":"` + n.ID + `","Resources":{"cpu":0.5,"futureField":1}}`,
		`{"type":"heart\u0062eat","nodeId":"` + n.ID + `","resources":{"cpu":0.5,"futureField":2}}`,
	} {
		if _, _, ok := scanHeartbeat([]byte(frame)); ok {
			t.Fatalf("the scan takes %s; the test wants one it leaves", frame)
		}
		a.send([]byte(frame))
		want := fmt.Sprintf(`"futureField":%d`, i+1)
		testsupport.WaitFor(t, "heartbeat "+want+" stored", func() bool {
			return strings.Contains(string(h.node(n.ID).Resources), want)
		})
	}
}

func TestApplicationPings(t *testing.T) {
	h := newHarness(t, map[string]string{"PING_INTERVAL": "100ms"})
	n := h.createNode("pinged")
	alive := h.connect(n.ID, n.Token)
	// Five pings span more than the three-interval read timeout: answering
	// them keeps the agent connected.
	for i := range 5 {
		select {
		case <-alive.pings:
		case <-alive.closed:
			t.Fatalf("an agent answering pings was disconnected after %d pings: %v", i, alive.closeErr)
		case <-time.After(waitLimit):
			t.Fatalf("no application ping")
		}
	}
	if !h.srv.hub.connected(n.ID) {
		t.Fatalf("an agent answering pings was disconnected")
	}
}

func TestSilentAgentIsDropped(t *testing.T) {
	h := newHarness(t, map[string]string{"PING_INTERVAL": "20ms"})
	n := h.createNode("silent")
	silent, _, err := h.dial(n.Token, dialOptions{noPong: true})
	if err != nil {
		t.Fatal(err)
	}
	silent.waitClosed()
	testsupport.WaitFor(t, "silent agent dropped", func() bool { return !h.srv.hub.connected(n.ID) })
}

func TestOversizedFrameClosesConnection(t *testing.T) {
	h := newHarness(t, map[string]string{"MAX_MESSAGE_BYTES": "65536"})
	n := h.createNode("big")
	a := h.connect(n.ID, n.Token)
	_ = a.conn.WriteMessage(gws.OpcodeText, []byte(`{"type":"heartbeat","x":"`+strings.Repeat("x", 70000)+`"}`))
	if code, _ := a.waitClosed(); code != 1009 {
		t.Errorf("close code = %d, want 1009 (message too big)", code)
	}
}

func TestMalformedFramesAreSurvived(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("noisy")
	a := h.connect(n.ID, n.Token)
	a.send([]byte(`not json`))
	a.send([]byte(`{"type":"heartbeat","resources":"wrong type"}`))
	a.send([]byte(`{"type":"from_the_future","x":1}`))
	a.send([]byte(`{"no":"type"}`))
	if err := a.conn.WriteMessage(gws.OpcodeBinary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	a.send(protocol.Heartbeat{NodeID: n.ID, Resources: protocol.HostResources{CPU: 0.1, Memory: "1MB"}})
	testsupport.WaitFor(t, "heartbeat after junk", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	if !h.srv.hub.connected(n.ID) {
		t.Errorf("junk frames closed the session")
	}
	if !strings.Contains(h.logs.String(), "malformed frame from agent") {
		t.Errorf("malformed frame not logged")
	}
}

// A stalled agent (it reads nothing) is cut off: the blocked write hits
// its deadline and the session is dropped, and no request hangs on it.
func TestStalledAgentIsCutOff(t *testing.T) {
	h := newHarness(t, map[string]string{"COMMAND_TIMEOUT": "500ms"})
	h.srv.writeTimeout = 200 * time.Millisecond
	n := h.createNode("stalled")
	if _, _, err := h.dial(n.Token, dialOptions{noRead: true}); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "session attached", func() bool { return h.srv.hub.connected(n.ID) })

	// Commands of almost 1 MiB each: far more than the socket buffers hold
	// for an agent that reads nothing.
	body := `{"action":"start","containerId":"c","environment":{"BIG":"` + strings.Repeat("x", 900<<10) + `"}}`
	results := make([]<-chan postResult, 16)
	for i := range results {
		results[i] = h.postCommand(n.ID, body)
	}
	// Every request ends: 504 after COMMAND_TIMEOUT, or 409 when it came
	// after the drop. Uploading and decoding 14 MiB of JSON takes seconds
	// under the race detector on a loaded machine, so the bound here only
	// tells a hung request from a slow one.
	const hung = time.Minute
	for _, res := range results {
		select {
		case r := <-res:
			if r.status != http.StatusGatewayTimeout && r.status != http.StatusConflict {
				t.Errorf("request = %d %s, want 504 (or 409 when it came after the drop)", r.status, r.body)
			}
		case <-time.After(hung):
			t.Fatalf("a request to a stalled agent hung")
		}
	}
	// A request that ended had its frame queued for the writer (or found
	// the session gone): 14 MiB cannot all fit in the socket buffers, so
	// a write blocks, hits its deadline and the session is dropped.
	testsupport.WaitFor(t, "stalled session dropped", func() bool { return !h.srv.hub.connected(n.ID) })
	if !strings.Contains(h.logs.String(), "write to agent failed") {
		t.Errorf("the session ended otherwise than by the failed write:\n%s", h.logs.String())
	}
	// The API stays responsive throughout.
	h.node(n.ID)
}

// An agent's WebSocket ping must be answered however long ago the server
// last wrote to it: the pong must not inherit the expired deadline of an
// earlier frame (that failed the write and dropped the session).
func TestWebSocketPingAfterIdleWriter(t *testing.T) {
	h := newHarness(t, nil)
	h.srv.writeTimeout = 50 * time.Millisecond
	n := h.createNode("pinging")
	a := h.connect(n.ID, n.Token)
	h.outliveWriteDeadline(n.ID, a)
	if err := a.conn.WritePing(nil); err != nil {
		t.Fatal(err)
	}
	a.send(protocol.Heartbeat{NodeID: n.ID, Resources: protocol.HostResources{CPU: 0.1, Memory: "1MB"}})
	testsupport.WaitFor(t, "heartbeat after a ping", func() bool {
		select {
		case <-a.closed:
			t.Fatalf("the server dropped an agent for pinging: %v", a.closeErr)
		default:
		}
		return h.node(n.ID).LastHeartbeat != nil
	})
}

// The 1009 close frame for an oversized frame reaches the agent however
// long the server's writer has been idle.
func TestOversizedFrameAfterIdleWriter(t *testing.T) {
	h := newHarness(t, map[string]string{"MAX_MESSAGE_BYTES": "65536"})
	h.srv.writeTimeout = 50 * time.Millisecond
	n := h.createNode("big")
	a := h.connect(n.ID, n.Token)
	h.outliveWriteDeadline(n.ID, a)
	_ = a.conn.WriteMessage(gws.OpcodeText, []byte(`{"type":"heartbeat","x":"`+strings.Repeat("x", 70000)+`"}`))
	if code, r := a.waitClosed(); code != 1009 {
		t.Errorf("close code = %d %s, want 1009 (message too big)", code, r)
	}
}

// What an agent reports is stored bounded: a heartbeat or agent_identify
// as large as a frame may be must not bloat the database and every node
// object the API returns.
func TestOversizedReportsAreStoredBounded(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("bloated")
	a := h.connect(n.ID, n.Token)
	huge := strings.Repeat("x", 200<<10)
	a.send(protocol.AgentIdentify{NodeName: "bloated", Version: "1.0.0", Hostname: huge})
	a.send([]byte(`{"type":"heartbeat","nodeId":"` + n.ID + `","timestamp":"2024-01-01T00:00:00Z",
		"resources":{"cpu":0.42,"memory":"512MB","futureField":"` + huge + `"}}`))
	testsupport.WaitFor(t, "heartbeat stored", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	body := h.admin("GET", "/api/nodes/"+n.ID, nil, http.StatusOK)
	if len(body) > 2*maxStoredJSON {
		t.Fatalf("node object is %d bytes, want at most %d", len(body), 2*maxStoredJSON)
	}
	var v nodeView
	decode(t, body, &v)
	if !strings.Contains(string(v.Resources), `"cpu":0.42`) {
		t.Errorf("resources = %s, want the known fields kept", v.Resources)
	}
	if !strings.Contains(h.logs.String(), "heartbeat resources too large") ||
		!strings.Contains(h.logs.String(), "agent_identify too large") {
		t.Errorf("oversized reports not logged")
	}
}

// The seed's TypeScript agent is served as
// it is: agent_identify without protocolVersion, heartbeats whose nodeId is
// the first 8 characters of its token, command results without a code.
// That slice of the token is not logged.
func TestSeedAgentWire(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("seed-node")
	a := h.connect(n.ID, n.Token)
	a.send([]byte(`{"type":"agent_identify","nodeName":"seed-node","version":"1.0.0"}`))
	a.send([]byte(`{"type":"heartbeat","nodeId":"` + n.Token[:8] + `","resources":{"cpu":0.5,"memory":"512MB"},"timestamp":"2024-01-01T00:00:00.000Z"}`))
	testsupport.WaitFor(t, "heartbeat stored", func() bool { return h.node(n.ID).LastHeartbeat != nil })
	v := h.node(n.ID)
	if v.AgentVersion == nil || *v.AgentVersion != "1.0.0" || string(v.Resources) != `{"cpu":0.5,"memory":"512MB"}` {
		t.Errorf("node = %+v %s, want agentVersion 1.0.0 and the seed's resources", v, v.Resources)
	}

	res := h.postCommand(n.ID, map[string]any{"action": "start", "containerId": "web"})
	cmd := a.command()
	a.send([]byte(`{"type":"command_result","commandId":"` + cmd.ID + `","status":"error","error":"no such container (Status: 404)"}`))
	r := <-res
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"error":"no such container (Status: 404)"`) {
		t.Errorf("command = %d %s, want 200 with the seed's error result", r.status, r.body)
	}
	if strings.Contains(h.logs.String(), n.Token[:8]) {
		t.Errorf("logs contain the token slice the seed sends as nodeId:\n%s", h.logs.String())
	}

	// With SERVER_URL ending in "/" the seed agent dials //api/ws/nodes; that
	// must reach the socket handler, not a redirect it would not follow.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(h.url + "//api/ws/nodes?token=not-a-token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET //api/ws/nodes = %d, want 401 from the socket handler", resp.StatusCode)
	}
}

// A token issued while NODE_TOKEN_TTL was 0 carries no exp; once a TTL is
// set it is refused like an expired one, so the TTL bounds every token.
func TestSocketTTLRefusesTokenWithoutExp(t *testing.T) {
	dir := t.TempDir()
	h1 := startHarness(t, dir, nil)
	n := h1.createNode("before-ttl")
	if err := h1.srv.Close(); err != nil {
		t.Fatal(err)
	}
	h2 := startHarness(t, dir, map[string]string{"NODE_TOKEN_TTL": "1h"})
	resp, data := h2.upgradeRequest(t, n.Token)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(errorOf(t, data), "expired") {
		t.Errorf("token without exp under a TTL: %d %s, want 401 expired", resp.StatusCode, data)
	}
}

// outliveWriteDeadline has the server write a ping to the node's agent a
// and returns once a has it and the write deadline of that frame is past.
// The sleep is the scenario, not a wait for a condition: only the clock
// moves a real socket's deadline into the past (synctest cannot fake it
// for a real connection), and it sleeps exactly until then.
func (h *harness) outliveWriteDeadline(nodeID string, a *testAgent) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := h.srv.hub.session(nodeID).send(ctx, pingFrame); err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-a.pings:
	case <-time.After(waitLimit):
		h.t.Fatal("no application ping")
	}
	// The write began before a got the ping: its deadline is before this.
	time.Sleep(h.srv.writeTimeout)
}
