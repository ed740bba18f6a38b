package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/dockertest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// enrollRequest posts an enrollment as an attacker would, with curl.
func (a *api) enrollRequest(enrollToken string, body any) (int, string) {
	a.t.Helper()
	var e struct{ Error string }
	req, _ := json.Marshal(body)
	hreq, _ := http.NewRequest("POST", a.base+"/api/nodes/enroll", strings.NewReader(string(req)))
	hreq.Header.Set("Authorization", "Bearer "+enrollToken)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

// signedRequest is an enrollment of name proved with a key of its own.
func signedRequest(t testing.TB, name string) protocol.EnrollRequest {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := base64.StdEncoding.EncodeToString(pub)
	ts := time.Now().Unix()
	sig := ed25519.Sign(priv, protocol.EnrollProofMessage(name, p, ts))
	return protocol.EnrollRequest{Name: name, PublicKey: p, Timestamp: ts, Signature: base64.StdEncoding.EncodeToString(sig)}
}

// nodeNamed returns the node with that name, or false.
func (a *api) nodeNamed(name string) (apiNode, bool) {
	var nodes []apiNode
	a.do("GET", "/api/nodes", a.token, nil, &nodes)
	for _, n := range nodes {
		if n.Name == name {
			return n, true
		}
	}
	return apiNode{}, false
}

func (a *api) waitEnrolled(name string, d time.Duration) apiNode {
	a.t.Helper()
	var n apiNode
	testsupport.Eventually(a.t, d, func() error {
		var ok bool
		if n, ok = a.nodeNamed(name); !ok || !n.Connected {
			return fmt.Errorf("node %q not enrolled and connected yet", name)
		}
		return nil
	})
	return n
}

// Issue 7, part 2: with the enrollment token and a node's name anyone used
// to get a working token for an EXISTING node, knocking its agent off.
// Against the built binaries: the attempts are refused, both agents
// (enrolled and admin-created) stay connected and keep serving commands; a
// copy of the enrolled agent's key cannot displace it while it is
// connected; the real agent that lost its token but kept its key gets its
// own node back while disconnected, and the old token stops working.
func TestEnrollmentCannotTakeOverANode(t *testing.T) {
	dockertest.Require(t)
	dataDir, addr := t.TempDir(), testsupport.FreeAddr(t)
	adminToken, enrollToken := "admin-"+randomHex(t, 16), "enroll-"+randomHex(t, 16)
	srv, a := startServer(t, addr, dataDir, "ADMIN_TOKEN="+adminToken, "ENROLLMENT_TOKEN="+enrollToken)
	a.token = adminToken

	victimName := "e2e-victim-" + randomHex(t, 3)
	victimDir := t.TempDir()
	victimState := filepath.Join(victimDir, "state")
	victimEnv := append(agentEnv(addr, victimName, victimState), "ENROLLMENT_TOKEN="+enrollToken)
	victim := start(t, "lormas-agent", victimDir, victimEnv...)
	vn := a.waitEnrolled(victimName, 30*time.Second)

	adminName := "e2e-admin-made-" + randomHex(t, 3)
	an := a.createNode(adminName)
	adminDir := t.TempDir()
	tokenFile := filepath.Join(adminDir, "node-token")
	if err := os.WriteFile(tokenFile, []byte(an.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAgent := start(t, "lormas-agent", adminDir, append(agentEnv(addr, adminName, filepath.Join(adminDir, "state")), "NODE_TOKEN_FILE="+tokenFile)...)
	a.waitConnected(an.ID, true, 30*time.Second)

	for _, name := range []string{victimName, adminName} {
		if code, msg := a.enrollRequest(enrollToken, map[string]string{"name": name}); code != http.StatusConflict ||
			!strings.Contains(msg, "already exists; enrollment creates new nodes") {
			t.Errorf("enroll %s without proof: %d %q, want 409", name, code, msg)
		}
		if code, msg := a.enrollRequest(enrollToken, signedRequest(t, name)); code != http.StatusConflict {
			t.Errorf("enroll %s with another key: %d %q, want 409", name, code, msg)
		}
	}
	for _, id := range []string{vn.ID, an.ID} {
		a.waitConnected(id, true, time.Second)
		a.mustSucceed(id, map[string]any{"action": "list"})
	}
	for _, p := range []*proc{victim, adminAgent} {
		if strings.Contains(p.out.String(), "server rejected the node token") {
			t.Errorf("%s was knocked off", p.name)
		}
	}

	// A copy of the victim's key (a stolen STATE_DIR without the token):
	// the node is connected, so it is not re-issued.
	cloneDir := t.TempDir()
	cloneState := filepath.Join(cloneDir, "state")
	if err := os.MkdirAll(cloneState, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(victimState, "node-key"))
	if err != nil {
		t.Fatalf("the enrolled agent kept no key: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(victimState, "node-key")); st.Mode().Perm() != 0o600 {
		t.Errorf("node-key mode %v, want 0600", st.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(cloneState, "node-key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	clone := start(t, "lormas-agent", cloneDir, append(agentEnv(addr, victimName, cloneState), "ENROLLMENT_TOKEN="+enrollToken)...)
	clone.waitOutput("is connected; an enrollment never replaces", 30*time.Second)
	clone.kill()
	a.waitConnected(vn.ID, true, time.Second)
	a.mustSucceed(vn.ID, map[string]any{"action": "list"})

	// The real agent, stopped, loses its token but keeps its key: its own
	// node's token is re-issued, and the old one is refused.
	oldToken, err := os.ReadFile(filepath.Join(victimState, "node-token"))
	if err != nil {
		t.Fatal(err)
	}
	if code := victim.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("victim exit %d", code)
	}
	a.waitConnected(vn.ID, false, 15*time.Second)
	if err := os.Remove(filepath.Join(victimState, "node-token")); err != nil {
		t.Fatal(err)
	}
	start(t, "lormas-agent", victimDir, victimEnv...)
	a.waitConnected(vn.ID, true, 30*time.Second)
	if n, _ := a.nodeNamed(victimName); n.ID != vn.ID {
		t.Errorf("re-enrolled as node %s, want the same node %s", n.ID, vn.ID)
	}
	req, _ := http.NewRequest("GET", a.base+"/api/ws/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(oldToken)))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the replaced token: %v %v, want 401", resp, err)
	}

	out := srv.out.String()
	for _, want := range []string{`"msg":"enrollment refused"`, `"reason":"name_taken"`, `"event":"reenroll"`} {
		if !strings.Contains(out, want) {
			t.Errorf("server log lacks %s", want)
		}
	}
	for _, secret := range []string{enrollToken, an.Token, strings.TrimSpace(string(oldToken))} {
		if strings.Contains(out, secret) {
			t.Errorf("server log contains a token")
		}
	}
}

// Issue 7, part 3: sessions end at token expiry, and agents get fresh
// tokens before, over their session, without an operator.
func TestTokenLifetime(t *testing.T) {
	dockertest.Require(t)
	dataDir, addr := t.TempDir(), testsupport.FreeAddr(t)
	adminToken, enrollToken := "admin-"+randomHex(t, 16), "enroll-"+randomHex(t, 16)
	env := []string{"ADMIN_TOKEN=" + adminToken, "ENROLLMENT_TOKEN=" + enrollToken, "NODE_TOKEN_TTL=3s"}
	srv, a := startServer(t, addr, dataDir, env...)
	a.token = adminToken

	// An enrolled agent, and an agent with a static NODE_TOKEN_FILE.
	enrolledName := "e2e-ttl-enrolled-" + randomHex(t, 3)
	eDir := t.TempDir()
	eState := filepath.Join(eDir, "state")
	enrolled := start(t, "lormas-agent", eDir, append(agentEnv(addr, enrolledName, eState), "ENROLLMENT_TOKEN="+enrollToken)...)
	en := a.waitEnrolled(enrolledName, 30*time.Second)
	firstEnrolled, _ := os.ReadFile(filepath.Join(eState, "node-token"))

	staticName := "e2e-ttl-static-" + randomHex(t, 3)
	sn := a.createNode(staticName)
	sDir := t.TempDir()
	sState := filepath.Join(sDir, "state")
	tokenFile := filepath.Join(sDir, "node-token-file")
	if err := os.WriteFile(tokenFile, []byte(sn.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	static := start(t, "lormas-agent", sDir, append(agentEnv(addr, staticName, sState), "NODE_TOKEN_FILE="+tokenFile)...)
	a.waitConnected(sn.ID, true, 30*time.Second)

	// Several lifetimes later both are still connected, on tokens they
	// were handed over their sessions.
	began := time.Now()
	for time.Since(began) < 10*time.Second {
		for _, id := range []string{en.ID, sn.ID} {
			if !a.node(id).Connected {
				t.Fatalf("node %s disconnected after %v", id, time.Since(began).Round(time.Millisecond))
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, c := range []struct {
		id, state, initial string
	}{{en.ID, eState, string(firstEnrolled)}, {sn.ID, sState, sn.Token}} {
		a.mustSucceed(c.id, map[string]any{"action": "list"})
		// Kept apart from the node's credential until a dial with it
		// succeeds (a token the agent cannot verify never replaces it).
		stored, err := os.ReadFile(filepath.Join(c.state, "node-token.refreshed"))
		if err != nil {
			t.Fatalf("no refreshed token stored for node %s: %v", c.id, err)
		}
		if st, _ := os.Stat(filepath.Join(c.state, "node-token.refreshed")); st.Mode().Perm() != 0o600 {
			t.Errorf("stored token mode %v", st.Mode().Perm())
		}
		if exp, first := tokenExp(t, string(stored)), tokenExp(t, c.initial); !exp.After(first.Add(6 * time.Second)) {
			t.Errorf("node %s: stored token expires %v, first one %v: want a refreshed one", c.id, exp, first)
		}
	}
	if strings.Contains(srv.out.String(), "closing session: its token expired") {
		t.Errorf("a session with the token_refresh capability was closed at expiry")
	}

	// Down longer than a lifetime: every token the agents hold expires.
	// The enrolled agent renews its own node's token with its key; the
	// static one cannot and says so.
	if code := srv.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	time.Sleep(4 * time.Second)
	srv, a2 := startServer(t, addr, dataDir, env...)
	a2.token = adminToken
	a2.waitConnected(en.ID, true, 30*time.Second)
	a2.mustSucceed(en.ID, map[string]any{"action": "list"})
	enrolled.waitOutput("expired node token renewed", 10*time.Second)
	if !strings.Contains(srv.out.String(), `"event":"renew"`) {
		t.Errorf("no renewal in the server's audit log")
	}
	static.waitOutput("the node token expired", 30*time.Second)
	if a2.node(sn.ID).Connected {
		t.Errorf("the static agent connected with an expired token")
	}
	for _, p := range []*proc{enrolled, static} {
		if strings.Contains(p.out.String(), sn.Token) || strings.Contains(p.out.String(), string(firstEnrolled)) {
			t.Errorf("%s logged a token", p.name)
		}
	}
}

func tokenExp(t *testing.T, token string) time.Time {
	t.Helper()
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(strings.TrimSpace(token), &c); err != nil || c.ExpiresAt == nil {
		t.Fatalf("token without exp: %v", err)
	}
	return c.ExpiresAt.Time
}

// Issue 7: 5,000 bad tokens from one address gave 10,000 log lines. The
// built server answers 429 after the burst and logs a handful of lines.
func TestBadTokensAreRateLimited(t *testing.T) {
	dataDir, addr := t.TempDir(), testsupport.FreeAddr(t)
	srv, a := startServer(t, addr, dataDir, "ADMIN_TOKEN=admin-"+randomHex(t, 16), "AUTH_FAILURE_BURST=10", "LOG_LEVEL=info")
	before := strings.Count(srv.out.String(), "\n")
	client := &http.Client{Timeout: 10 * time.Second}
	statuses := map[int]int{}
	const attempts = 1000
	for range attempts {
		req, _ := http.NewRequest("GET", a.base+"/api/ws/nodes?token=forged.token.value", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[http.StatusUnauthorized] != 10 || statuses[http.StatusTooManyRequests] != attempts-10 {
		t.Errorf("statuses %v, want 10 x 401 then 429", statuses)
	}
	if code := srv.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(srv.out.String()), "\n")[before:]
	var noisy []string
	for _, l := range lines {
		if strings.Contains(l, "token") || strings.Contains(l, "authentication") || strings.Contains(l, "/api/ws/nodes") {
			noisy = append(noisy, l)
		}
	}
	t.Logf("%d bad tokens: %d log lines about them", attempts, len(noisy))
	if len(noisy) > 3 {
		t.Errorf("%d log lines about %d bad tokens, want at most 3:\n%s", len(noisy), attempts, strings.Join(noisy, "\n"))
	}
}

// Issue 7: a numeric nodeId claim gave heartbeats "42" while containers
// were labelled with NODE_NAME. The built agent now uses one value.
func TestNumericNodeIDLabelsAndHeartbeatsAgree(t *testing.T) {
	cli := dockertest.Require(t)
	image := dockertest.WorkloadImage(t)
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"nodeId": 42, "iat": time.Now().Unix(), "jti": randomHex(t, 8)}).
		SignedString([]byte(randomHex(t, 32)))
	if err != nil {
		t.Fatal(err)
	}
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	dir := t.TempDir()
	start(t, "lormas-agent", dir, "SERVER_URL="+srv.URL(), "NODE_TOKEN="+token, "NODE_NAME=e2e-numeric",
		"STATE_DIR="+dir+"/state", "HEARTBEAT_INTERVAL=1s", "HEALTH_ADDR=")
	hb := srv.Expect(protocol.TypeHeartbeat).(protocol.Heartbeat)
	if hb.NodeID != "42" {
		t.Errorf("heartbeat nodeId %q, want 42", hb.NodeID)
	}
	name := "e2e-numeric-" + randomHex(t, 4)
	removeContainer(t, cli, name)
	t.Cleanup(func() { removeContainer(t, cli, name) })
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"create-%s","action":"create","containerId":%q,"eggConfig":{"image":%q,"pullPolicy":"never"}}`, name, name, image))
	mustSucceed(t, srv, "create-"+name, 60*time.Second)
	if got := inspect(t, cli, name).Config.Labels["lormas.node"]; got != "42" {
		t.Errorf("label lormas.node = %q, want 42 (the heartbeat's nodeId)", got)
	}
	// And the agent still manages it: the label is its own.
	send(t, srv, fmt.Sprintf(`{"type":"command","id":"delete-%s","action":"delete","containerId":%q}`, name, name))
	mustSucceed(t, srv, "delete-"+name, 60*time.Second)
}
