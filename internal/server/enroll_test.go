package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

type enrolled struct {
	ID, Name, Token, ExpiresAt string
}

// testKey is an agent's enrollment key.
type testKey struct {
	priv ed25519.PrivateKey
	pub  string
}

func newTestKey(t *testing.T) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv: priv, pub: base64.StdEncoding.EncodeToString(pub)}
}

// request is an enrollment of name proved by k at time at.
func (k testKey) request(name string, at time.Time) protocol.EnrollRequest {
	ts := at.Unix()
	sig := ed25519.Sign(k.priv, protocol.EnrollProofMessage(name, k.pub, ts))
	return protocol.EnrollRequest{Name: name, PublicKey: k.pub, Timestamp: ts, Signature: base64.StdEncoding.EncodeToString(sig)}
}

// enrollBody posts an enrollment request with the enrollment token.
func (h *harness) enrollBody(body any) (*http.Response, []byte) {
	h.t.Helper()
	return h.request("POST", "/api/nodes/enroll", body, testEnrollmentToken)
}

func (h *harness) enroll(token, name string, wantStatus int) enrolled {
	h.t.Helper()
	resp, data := h.request("POST", "/api/nodes/enroll", map[string]string{"name": name}, token)
	if resp.StatusCode != wantStatus {
		h.t.Fatalf("enroll %q = %d %s, want %d", name, resp.StatusCode, data, wantStatus)
	}
	var e enrolled
	if wantStatus < 300 {
		decode(h.t, data, &e)
	}
	return e
}

// enrollWith sends req and checks the status; it returns the answer.
func (h *harness) enrollWith(req protocol.EnrollRequest, wantStatus int) (enrolled, string) {
	h.t.Helper()
	resp, data := h.enrollBody(req)
	if resp.StatusCode != wantStatus {
		h.t.Fatalf("enroll %q = %d %s, want %d", req.Name, resp.StatusCode, data, wantStatus)
	}
	var e enrolled
	if wantStatus < 300 {
		decode(h.t, data, &e)
		return e, ""
	}
	return e, errorOf(h.t, data)
}

// stillServes checks that the test agent a of node id is connected and
// receives and answers a command through the REST API.
func (h *harness) stillServes(a *testAgent, id string) {
	h.t.Helper()
	if !h.srv.hub.connected(id) {
		h.t.Fatalf("node %s is no longer connected", id)
	}
	res := h.postCommand(id, map[string]any{"action": "list"})
	cmd := a.command()
	a.send(protocol.Success(cmd.ID, map[string]any{"containers": []any{}}, nil))
	if r := <-res; r.status != http.StatusOK {
		h.t.Fatalf("command to node %s after the enrollment attempt: %d %s", id, r.status, r.body)
	}
	select {
	case <-a.closed:
		h.t.Fatalf("the agent of node %s was disconnected: %v", id, a.closeErr)
	default:
	}
}

func TestEnrollNewNodes(t *testing.T) {
	h := newHarness(t, map[string]string{"NODE_TOKEN_TTL": "1h"})
	// Without a key (a seed-era agent): a new node.
	plain := h.enroll(testEnrollmentToken, "k8s-node-a", http.StatusCreated)
	if plain.ID == "" || plain.Name != "k8s-node-a" || plain.Token == "" || plain.ExpiresAt == "" {
		t.Fatalf("enrolled = %+v", plain)
	}
	if _, err := time.Parse(time.RFC3339, plain.ExpiresAt); err != nil {
		t.Errorf("expiresAt %q is not RFC 3339", plain.ExpiresAt)
	}
	if v := h.node(plain.ID); v.Name != "k8s-node-a" {
		t.Errorf("enrolled node = %+v", v)
	}
	h.connect(plain.ID, plain.Token)

	// With a key: a new node that remembers it.
	k := newTestKey(t)
	keyed, _ := h.enrollWith(k.request("k8s-node-b", time.Now()), http.StatusCreated)
	n, err := h.srv.store.Node(t.Context(), keyed.ID)
	if err != nil || n.PublicKey != k.pub {
		t.Errorf("stored key %q, %v; want the request's", n.PublicKey, err)
	}
	// A proof that does not verify does not create a node either.
	bad := k.request("k8s-node-c", time.Now())
	bad.Signature = base64.StdEncoding.EncodeToString(make([]byte, ed25519.SignatureSize))
	if _, msg := h.enrollWith(bad, http.StatusBadRequest); !strings.Contains(msg, "does not verify") {
		t.Errorf("bad signature: %q", msg)
	}
	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 2 {
		t.Errorf("%d nodes, want 2", len(list))
	}
}

// The attack of issue 7: the enrollment token and a node's name used to be
// enough to obtain a working token for an EXISTING node, knocking its agent
// off. Now the name is refused unless the request proves the node's key,
// and the connected agent keeps running and receiving commands.
func TestEnrollExistingNameWithoutProofIsRefused(t *testing.T) {
	h := newHarness(t, nil)
	admin := h.createNode("admin-made")
	adminAgent := h.connect(admin.ID, admin.Token)
	k := newTestKey(t)
	keyed, _ := h.enrollWith(k.request("enrolled", time.Now()), http.StatusCreated)
	keyedAgent := h.connect(keyed.ID, keyed.Token)
	attacker := newTestKey(t)

	for _, c := range []struct {
		name    string
		req     protocol.EnrollRequest
		status  int
		wantErr string
	}{
		{"admin-made, no proof", protocol.EnrollRequest{Name: "admin-made"}, http.StatusConflict, "already exists; enrollment creates new nodes"},
		{"admin-made, any key", attacker.request("admin-made", time.Now()), http.StatusConflict, "has no enrollment key"},
		{"enrolled, no proof", protocol.EnrollRequest{Name: "enrolled"}, http.StatusConflict, "already exists; enrollment creates new nodes"},
		{"enrolled, another key", attacker.request("enrolled", time.Now()), http.StatusConflict, "not signed by its key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, msg := h.enrollWith(c.req, c.status); !strings.Contains(msg, c.wantErr) {
				t.Errorf("error %q, want %q", msg, c.wantErr)
			}
		})
	}
	h.stillServes(adminAgent, admin.ID)
	h.stillServes(keyedAgent, keyed.ID)
	// The node tokens in use are still valid.
	for _, tok := range []string{admin.Token, keyed.Token} {
		if _, _, err := h.srv.authenticateNode(t.Context(), tok); err != nil {
			t.Errorf("a node token after the attempts: %v", err)
		}
	}
}

func TestEnrollWithProof(t *testing.T) {
	h := newHarness(t, nil)
	k := newTestKey(t)
	start := time.Now().Add(-time.Minute)
	first, _ := h.enrollWith(k.request("edge", start), http.StatusCreated)
	a := h.connect(first.ID, first.Token)

	// Valid proof while the node is connected: 409, the agent stays.
	if _, msg := h.enrollWith(k.request("edge", start.Add(10*time.Second)), http.StatusConflict); !strings.Contains(msg, "node \"edge\" is connected") {
		t.Errorf("connected: %q", msg)
	}
	h.stillServes(a, first.ID)

	_ = a.conn.WriteClose(1000, nil)
	testsupport.WaitFor(t, "disconnected", func() bool { return !h.srv.hub.connected(first.ID) })

	forged := k.request("edge", start.Add(20*time.Second))
	forged.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(newTestKey(t).priv,
		protocol.EnrollProofMessage("edge", k.pub, forged.Timestamp)))
	otherName := k.request("edge-2", start.Add(20*time.Second)) // signed for another name
	otherName.Name = "edge"
	stale := k.request("edge", time.Now().Add(-10*time.Minute))
	future := k.request("edge", time.Now().Add(10*time.Minute))
	for _, c := range []struct {
		name    string
		req     protocol.EnrollRequest
		status  int
		wantErr string
	}{
		{"forged signature", forged, http.StatusConflict, "does not verify"},
		{"signed for another name", otherName, http.StatusConflict, "does not verify"},
		{"replayed first proof", k.request("edge", start), http.StatusConflict, "not later than the last"},
		{"stale timestamp", stale, http.StatusBadRequest, "away from the server's clock"},
		{"future timestamp", future, http.StatusBadRequest, "away from the server's clock"},
		{"half a proof", protocol.EnrollRequest{Name: "edge", PublicKey: k.pub}, http.StatusBadRequest, "go together"},
		{"short key", protocol.EnrollRequest{Name: "edge", PublicKey: "AAAA", Timestamp: 1, Signature: "AAAA"}, http.StatusBadRequest, "32-byte"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, msg := h.enrollWith(c.req, c.status); !strings.Contains(msg, c.wantErr) {
				t.Errorf("error %q, want %q", msg, c.wantErr)
			}
		})
	}

	// Valid proof while disconnected: the same node, a new token; the old
	// token is refused.
	proof := k.request("edge", start.Add(30*time.Second))
	again, _ := h.enrollWith(proof, http.StatusOK)
	if again.ID != first.ID || again.Token == first.Token {
		t.Fatalf("re-enrolled = %+v, want node %s with a new token", again, first.ID)
	}
	if resp, _ := h.upgradeRequest(t, first.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("old token after re-enrollment: %d, want 401", resp.StatusCode)
	}
	// The same proof again (a replay of the accepted request): refused.
	if _, msg := h.enrollWith(proof, http.StatusConflict); !strings.Contains(msg, "not later than the last") {
		t.Errorf("replay of the accepted proof: %q", msg)
	}
	h.connect(again.ID, again.Token)

	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 1 {
		t.Errorf("%d nodes after re-enrollment, want 1", len(list))
	}
	// No token, key or signature in the logs (audit lines included).
	logs := h.logs.String()
	for _, secret := range []string{first.Token, again.Token, k.pub, proof.Signature, testEnrollmentToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret or key material %.12q...", secret)
		}
	}
	for _, line := range []string{"node token issued", "event=reenroll", "enrollment refused", "reason=connected"} {
		if !strings.Contains(logs, line) {
			t.Errorf("logs lack %q", line)
		}
	}
}

// A renewal re-issues only the node's own token: it never creates a node
// (a deleted node stays deleted) and never undoes a rotation.
func TestRenewal(t *testing.T) {
	h := newHarness(t, map[string]string{"NODE_TOKEN_TTL": "1h"})
	k := newTestKey(t)
	at := time.Now().Add(-2 * time.Minute)
	n, _ := h.enrollWith(k.request("renew-me", at), http.StatusCreated)
	renewal := func(token string, at time.Time) protocol.EnrollRequest {
		r := k.request("renew-me", at)
		r.NodeID, r.Token = n.ID, token
		return r
	}
	// The token expired long ago (the server's clock moved on): renewed.
	h.srv.setClock(func() time.Time { return time.Now().Add(3 * time.Hour) })
	if resp, _ := h.upgradeRequest(t, n.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired token: %d, want 401", resp.StatusCode)
	}
	renewed, _ := h.enrollWith(renewal(n.Token, time.Now().Add(3*time.Hour)), http.StatusOK)
	if renewed.ID != n.ID || renewed.Token == n.Token {
		t.Fatalf("renewed = %+v", renewed)
	}
	h.srv.setClock(time.Now)

	// Rotated by the administrator: the renewal does not undo it.
	h.admin("PATCH", "/api/nodes/"+n.ID+"/token", nil, http.StatusOK)
	if _, msg := h.enrollWith(renewal(renewed.Token, time.Now().Add(-time.Minute)), http.StatusConflict); !strings.Contains(msg, "rotated") {
		t.Errorf("renewal after rotation: %q", msg)
	}
	// Forged token (another key): refused.
	if _, msg := h.enrollWith(renewal(renewed.Token+"x", time.Now()), http.StatusBadRequest); !strings.Contains(msg, "not a token of node") {
		t.Errorf("renewal with a forged token: %q", msg)
	}
	// Deleted: 404, and no node is created.
	h.admin("DELETE", "/api/nodes/"+n.ID, nil, http.StatusNoContent)
	if _, msg := h.enrollWith(renewal(renewed.Token, time.Now()), http.StatusNotFound); !strings.Contains(msg, "never creates a node") {
		t.Errorf("renewal of a deleted node: %q", msg)
	}
	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 0 {
		t.Errorf("renewal of a deleted node created %d nodes", len(list))
	}
}

func TestEnrollRefused(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		name, token string
		body        string
		status      int
		wantErr     string
	}{
		{"no token", "", `{"name":"a"}`, http.StatusUnauthorized, "missing Authorization"},
		{"wrong token", "wrong-enrollment-token-000", `{"name":"a"}`, http.StatusUnauthorized, "invalid enrollment token"},
		{"admin token", testAdminToken, `{"name":"a"}`, http.StatusUnauthorized, "invalid enrollment token"},
		{"no name", testEnrollmentToken, `{}`, http.StatusBadRequest, "name is required"},
		{"invalid JSON", testEnrollmentToken, `{`, http.StatusBadRequest, "invalid JSON"},
		{"unknown field", testEnrollmentToken, `{"name":"a","node_id":"x"}`, http.StatusBadRequest, "unknown field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, data := h.request("POST", "/api/nodes/enroll", c.body, c.token)
			if resp.StatusCode != c.status {
				t.Fatalf("status = %d %s, want %d", resp.StatusCode, data, c.status)
			}
			if got := errorOf(t, data); !strings.Contains(got, c.wantErr) {
				t.Errorf("error = %q, want %q", got, c.wantErr)
			}
		})
	}
	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 0 {
		t.Errorf("refused enrollments created %d nodes", len(list))
	}
}

func TestGeneratedEnrollmentTokenIsExported(t *testing.T) {
	dir := t.TempDir()
	export := filepath.Join(t.TempDir(), "shared", "token")
	env := map[string]string{"ENROLLMENT_TOKEN": "", "ENROLLMENT_TOKEN_EXPORT_FILE": export}
	h := startHarness(t, dir, env)
	if h.srv.EnrollmentTokenFile() != export {
		t.Errorf("EnrollmentTokenFile = %q, want %q", h.srv.EnrollmentTokenFile(), export)
	}
	fi, err := os.Stat(export)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != exportFileMode {
		t.Errorf("export mode = %o, want %o", fi.Mode().Perm(), exportFileMode)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if !strings.HasPrefix(token, enrollmentTokenPrefix) || len(token) < 40 {
		t.Fatalf("exported token %q does not look generated", token)
	}
	h.enroll(token, "from-file", http.StatusCreated)
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart keeps the token and rewrites a deleted export.
	if err := os.Remove(export); err != nil {
		t.Fatal(err)
	}
	h2 := startHarness(t, dir, env)
	raw, err = os.ReadFile(export)
	if err != nil {
		t.Fatalf("export not rewritten on restart: %v", err)
	}
	if strings.TrimSpace(string(raw)) != token {
		t.Errorf("enrollment token changed across a restart")
	}
	h2.enroll(token, "after-restart", http.StatusCreated)

	// A configured token is not exported.
	h3 := newHarness(t, nil)
	if h3.srv.EnrollmentTokenFile() != "" {
		t.Errorf("configured token exported to %q", h3.srv.EnrollmentTokenFile())
	}
	if _, err := os.Stat(filepath.Join(h3.dir, "enrollment-token")); !os.IsNotExist(err) {
		t.Errorf("configured enrollment token written to DATA_DIR: %v", err)
	}
}

// A refused request's client-chosen text (an unvalidated name, an unknown
// field's name) is clipped in the audit line: a body may be 1 MiB.
func TestEnrollAuditLineIsBounded(t *testing.T) {
	h := newHarness(t, nil)
	long := strings.Repeat("x", 100_000)
	resp, _ := h.enrollBody(`{"name":"` + long + `"}`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if len(l) > 2000 {
			t.Errorf("a log line of %d bytes", len(l))
		}
	}
	if !strings.Contains(h.logs.String(), "enrollment refused") {
		t.Errorf("no audit line for the refusal")
	}
}
