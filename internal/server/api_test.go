package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestAdminAuthFailures(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("auth-node")
	routes := []struct{ method, path string }{
		{"GET", "/api/nodes"},
		{"POST", "/api/nodes"},
		{"GET", "/api/nodes/" + n.ID},
		{"DELETE", "/api/nodes/" + n.ID},
		{"PATCH", "/api/nodes/" + n.ID + "/token"},
		{"POST", "/api/nodes/" + n.ID + "/commands"},
		{"GET", "/api/nodes/" + n.ID + "/events"},
		{"GET", "/api/nodes/" + n.ID + "/containers/c1/logs"},
	}
	auths := []struct {
		name, header, wantErr string
	}{
		{"missing", "", "missing Authorization header"},
		{"wrong scheme", "Basic " + testAdminToken, "Bearer scheme"},
		{"empty bearer", "Bearer ", "empty bearer token"},
		{"wrong token", "Bearer not-the-admin-token-at-all", "invalid admin token"},
		{"node token", "Bearer " + n.Token, "invalid admin token"},
		{"enrollment token", "Bearer " + testEnrollmentToken, "invalid admin token"},
	}
	for _, rt := range routes {
		for _, a := range auths {
			t.Run(rt.method+" "+rt.path+"/"+a.name, func(t *testing.T) {
				req, _ := http.NewRequest(rt.method, h.url+rt.path, strings.NewReader(`{"name":"x"}`))
				if a.header != "" {
					req.Header.Set("Authorization", a.header)
				}
				resp, err := h.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				data := readAll(t, resp)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status = %d %s, want 401", resp.StatusCode, data)
				}
				if got := errorOf(t, data); !strings.Contains(got, a.wantErr) {
					t.Errorf("error = %q, want it to mention %q", got, a.wantErr)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("no WWW-Authenticate header")
				}
			})
		}
	}
	// Nothing was changed by the refused requests.
	if v := h.node(n.ID); v.Name != "auth-node" {
		t.Errorf("node after refused requests = %+v", v)
	}
}

func TestNodeLifecycle(t *testing.T) {
	h := newHarness(t, nil)
	created := h.createNode("node-01")
	if created.ID == "" || created.Name != "node-01" || created.Description != "test node" ||
		created.Token == "" || created.CreatedAt == "" {
		t.Fatalf("created = %+v", created)
	}

	// The token carries the agreed claims, and no exp with NODE_TOKEN_TTL=0.
	claims := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(created.Token, claims)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Method.Alg() != "HS256" {
		t.Errorf("alg = %s, want HS256", tok.Method.Alg())
	}
	for _, c := range []string{"nodeId", "sub", "name", "iat", "jti"} {
		if _, ok := claims[c]; !ok {
			t.Errorf("token has no %q claim: %v", c, claims)
		}
	}
	if claims["nodeId"] != created.ID || claims["sub"] != created.ID || claims["name"] != "node-01" {
		t.Errorf("claims = %v, want nodeId/sub %s and name node-01", claims, created.ID)
	}
	if _, ok := claims["exp"]; ok {
		t.Errorf("token has exp although NODE_TOKEN_TTL is 0")
	}

	other := h.createNode("node-02")
	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 2 || list[0].ID != created.ID || list[1].ID != other.ID {
		t.Fatalf("list = %+v, want node-01, node-02", list)
	}
	raw := string(h.admin("GET", "/api/nodes/"+created.ID, nil, http.StatusOK))
	for _, want := range []string{`"connected":false`, `"lastHeartbeat":null`, `"resources":null`, `"agentVersion":null`,
		`"createdAt":"` + created.CreatedAt + `"`, `"description":"test node"`} {
		if !strings.Contains(raw, want) {
			t.Errorf("GET node = %s, want it to contain %s", raw, want)
		}
	}

	if data := h.admin("DELETE", "/api/nodes/"+created.ID, nil, http.StatusNoContent); len(data) != 0 {
		t.Errorf("DELETE body = %q, want none", data)
	}
	if got := errorOf(t, h.admin("GET", "/api/nodes/"+created.ID, nil, http.StatusNotFound)); !strings.Contains(got, "not found") {
		t.Errorf("GET deleted node error = %q", got)
	}
	errorOf(t, h.admin("DELETE", "/api/nodes/"+created.ID, nil, http.StatusNotFound))
	errorOf(t, h.admin("PATCH", "/api/nodes/"+created.ID+"/token", nil, http.StatusNotFound))
	errorOf(t, h.admin("POST", "/api/nodes/nope/commands", map[string]any{"action": "start", "containerId": "c"}, http.StatusNotFound))
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 1 || list[0].ID != other.ID {
		t.Errorf("list after delete = %+v, want node-02 only", list)
	}
	// The name is free again.
	h.createNode("node-01")
}

func TestCreateNodeBadInput(t *testing.T) {
	h := newHarness(t, map[string]string{"MAX_BODY_BYTES": "1024"})
	h.createNode("taken")
	cases := []struct {
		name        string
		body        string
		contentType string
		status      int
		wantErr     string
	}{
		{"duplicate name", `{"name":"taken"}`, "", http.StatusConflict, `"taken" exists already`},
		{"missing name", `{"description":"x"}`, "", http.StatusBadRequest, "name is required"},
		{"empty name", `{"name":""}`, "", http.StatusBadRequest, "name is required"},
		{"too long", `{"name":"` + strings.Repeat("n", 254) + `"}`, "", http.StatusBadRequest, "at most 253"},
		{"control character", `{"name":"a\u0007b"}`, "", http.StatusBadRequest, "control characters"},
		{"surrounding space", `{"name":" a"}`, "", http.StatusBadRequest, "white space"},
		{"long description", `{"name":"d","description":"` + strings.Repeat("d", 1000) + `"}`, "", http.StatusRequestEntityTooLarge, "larger than 1024 bytes"},
		{"name of wrong type", `{"name":5}`, "", http.StatusBadRequest, `field "name": want string, got number`},
		{"unknown field", `{"name":"u","colour":"red"}`, "", http.StatusBadRequest, `unknown field "colour"`},
		{"invalid JSON", `{"name":`, "", http.StatusBadRequest, "invalid JSON"},
		{"not JSON", `name=x`, "", http.StatusBadRequest, "invalid JSON"},
		{"empty body", ``, "", http.StatusBadRequest, "request body is empty"},
		{"array", `["x"]`, "", http.StatusBadRequest, "must be a JSON object"},
		{"two objects", `{"name":"a"}{"name":"b"}`, "", http.StatusBadRequest, "single JSON object"},
		{"form content type", `{"name":"f"}`, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, "Content-Type must be application/json"},
		{"oversized", `{"name":"big","description":"` + strings.Repeat("x", 4096) + `"}`, "", http.StatusRequestEntityTooLarge, "larger than 1024 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", h.url+"/api/nodes", strings.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+testAdminToken)
			ct := c.contentType
			if ct == "" {
				ct = "application/json; charset=utf-8"
			}
			req.Header.Set("Content-Type", ct)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data := readAll(t, resp)
			if resp.StatusCode != c.status {
				t.Fatalf("status = %d %s, want %d", resp.StatusCode, data, c.status)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", resp.Header.Get("Content-Type"))
			}
			if got := errorOf(t, data); !strings.Contains(got, c.wantErr) {
				t.Errorf("error = %q, want it to contain %q", got, c.wantErr)
			}
		})
	}
	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 1 {
		t.Errorf("%d nodes after bad requests, want 1", len(list))
	}
	// A 253-character name is fine.
	h.createNode(strings.Repeat("n", 253))
}

func TestRouteErrorsAreJSON(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", http.StatusNotFound, ""},
		{"GET", "/api/nodes/x/y/z", http.StatusNotFound, ""},
		{"PUT", "/api/nodes", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
		{"GET", "/api/nodes/x/commands", http.StatusMethodNotAllowed, "POST"},
		{"POST", "/api/ws/nodes", http.StatusMethodNotAllowed, "GET, HEAD"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			resp, data := h.request(c.method, c.path, nil, testAdminToken)
			if resp.StatusCode != c.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, c.status)
			}
			errorOf(t, data)
			if got := resp.Header.Get("Allow"); got != c.allow {
				t.Errorf("Allow = %q, want %q", got, c.allow)
			}
		})
	}
}

func TestPanicIsRecovered(t *testing.T) {
	h := newHarness(t, nil)
	panicking := h.srv.middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))
	rec := httptest.NewRecorder()
	panicking.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if got := errorOf(t, rec.Body.Bytes()); got != "internal error" {
		t.Errorf("error = %q", got)
	}
	if !strings.Contains(h.logs.String(), "handler panic") {
		t.Errorf("panic not logged")
	}
	// The server goes on serving.
	h.admin("GET", "/api/nodes", nil, http.StatusOK)
}

func TestHealthz(t *testing.T) {
	h := newHarness(t, nil)
	resp, data := h.request("GET", "/healthz", nil, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(data), `"ok"`) {
		t.Errorf("GET /healthz = %d %s", resp.StatusCode, data)
	}
}

func TestLogsNeverContainSecrets(t *testing.T) {
	h := newHarness(t, nil)
	n := h.createNode("secretive")
	a := h.connect(n.ID, n.Token) // token in both the header and ?token=
	a.send(map[string]any{"type": "heartbeat", "nodeId": n.ID, "resources": map[string]any{"cpu": 0.1, "memory": "1MB"}})
	h.request("GET", "/api/nodes?token="+n.Token, nil, "wrong-"+testAdminToken)
	resp, _ := h.request("POST", "/api/nodes/enroll", map[string]string{"name": "e"}, testEnrollmentToken)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enroll = %d", resp.StatusCode)
	}
	logs := h.logs.String()
	for _, secret := range []string{testAdminToken, testEnrollmentToken, n.Token, strings.Split(n.Token, ".")[2]} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret:\n%s", logs)
		}
	}
	for _, want := range []string{"path=/api/ws/nodes ", "path=/api/nodes ", "status=101", "status=401", "duration="} {
		if !strings.Contains(logs, want) {
			t.Errorf("request log lacks %q:\n%s", want, logs)
		}
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return []byte(b.String())
}
