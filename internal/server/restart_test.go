package server

import (
	"net/http"
	"strings"
	"testing"
)

func TestRestartKeepsNodesTokensAndSecrets(t *testing.T) {
	dir := t.TempDir()
	// No ADMIN_TOKEN, JWT_SECRET or ENROLLMENT_TOKEN: all generated.
	noSecrets := map[string]string{"ADMIN_TOKEN": "", "ENROLLMENT_TOKEN": ""}
	h1 := startHarness(t, dir, noSecrets)
	admin := h1.srv.GeneratedAdminToken()
	if !strings.HasPrefix(admin, adminTokenPrefix) {
		t.Fatalf("generated admin token = %q", admin)
	}
	resp, data := h1.request("POST", "/api/nodes", map[string]string{"name": "survivor"}, admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create with the generated admin token = %d %s", resp.StatusCode, data)
	}
	var n createdNode
	decode(t, data, &n)
	jwtKey := string(h1.srv.creds.jwtKey)
	if err := h1.srv.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := startHarness(t, dir, noSecrets)
	if got := h2.srv.GeneratedAdminToken(); got != "" {
		t.Errorf("second start generated another admin token")
	}
	if string(h2.srv.creds.jwtKey) != jwtKey {
		t.Errorf("JWT secret changed across a restart")
	}
	resp, data = h2.request("GET", "/api/nodes/"+n.ID, nil, admin)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(data), `"name":"survivor"`) {
		t.Fatalf("node after restart with the first admin token = %d %s", resp.StatusCode, data)
	}
	// The node token issued before the restart still authenticates.
	h2.connect(n.ID, n.Token)
	// Nothing secret is in the database in plain text except the JWT
	// secret and the enrollment token: the admin token is only a hash.
	stored, _, err := h2.srv.store.Setting(t.Context(), settingAdminTokenHash)
	if err != nil || stored == "" || strings.Contains(stored, admin) {
		t.Errorf("stored admin token setting = %q, %v; want a hash", stored, err)
	}
}

func TestConfiguredSecretsWin(t *testing.T) {
	dir := t.TempDir()
	h1 := startHarness(t, dir, map[string]string{"JWT_SECRET": strings.Repeat("k", 32)})
	n := h1.createNode("keyed")
	if err := h1.srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Another JWT_SECRET invalidates tokens signed with the old one; the
	// admin token given in the environment replaces the previous one.
	h2 := startHarness(t, dir, map[string]string{"JWT_SECRET": strings.Repeat("z", 32), "ADMIN_TOKEN": "another-admin-token-xyz"})
	if resp, _ := h2.upgradeRequest(t, n.Token); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token signed with the old secret: %d, want 401", resp.StatusCode)
	}
	if resp, _ := h2.request("GET", "/api/nodes", nil, testAdminToken); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("old admin token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := h2.request("GET", "/api/nodes", nil, "another-admin-token-xyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("configured admin token: %d, want 200", resp.StatusCode)
	}
}
