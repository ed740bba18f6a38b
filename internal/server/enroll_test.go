package server

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type enrolled struct {
	ID, Name, Token string
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

func TestEnroll(t *testing.T) {
	h := newHarness(t, nil)
	first := h.enroll(testEnrollmentToken, "k8s-node-a", http.StatusCreated)
	if first.ID == "" || first.Name != "k8s-node-a" || first.Token == "" {
		t.Fatalf("enrolled = %+v", first)
	}
	if v := h.node(first.ID); v.Name != "k8s-node-a" {
		t.Errorf("enrolled node = %+v", v)
	}
	a := h.connect(first.ID, first.Token)

	// Enrolling the same name again (an agent that lost its state) re-issues
	// the token of the same node: the old token stops working at once.
	again := h.enroll(testEnrollmentToken, "k8s-node-a", http.StatusOK)
	if again.ID != first.ID || again.Token == first.Token {
		t.Fatalf("re-enrolled = %+v, want node %s with a new token", again, first.ID)
	}
	if code, reason := a.waitClosed(); code != closeTokenRotated {
		t.Errorf("session with the old token closed with %d %q, want 4001", code, reason)
	}
	if resp, _ := h.upgradeRequest(t, first.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("old token after re-enrollment: %d, want 401", resp.StatusCode)
	}
	h.connect(again.ID, again.Token)

	var list []nodeView
	decode(t, h.admin("GET", "/api/nodes", nil, http.StatusOK), &list)
	if len(list) != 1 {
		t.Errorf("%d nodes after re-enrollment, want 1", len(list))
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
