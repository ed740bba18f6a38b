package enroll_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/server"
)

// TestAgainstLormasServer runs the client against the real server handler:
// both sides of the contract agree (the proof's message, the fields, the
// statuses).
func TestAgainstLormasServer(t *testing.T) {
	const token = "enrollment-token-for-the-test"
	cfg, err := server.LoadConfig(map[string]string{"DATA_DIR": t.TempDir(), "ENROLLMENT_TOKEN": token,
		"ADMIN_TOKEN": "admin-token-for-the-test", "NODE_TOKEN_TTL": "1h", "AUTH_FAILURE_BURST": "100"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(func() { srv.Close() })
	u, err := endpoint.Parse(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, _, err := enroll.State{Dir: t.TempDir()}.KeyOrCreate()
	if err != nil {
		t.Fatal(err)
	}

	first, err := enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "edge-01", Key: key, Now: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == "" || first.Name != "edge-01" || first.Token == "" || first.Reissued || first.ExpiresAt == "" {
		t.Fatalf("first = %+v, want a new node with a token that expires", first)
	}

	// The name is taken: without the key's proof, and with another key, 409.
	_, err = enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "edge-01"})
	var se *enroll.StatusError
	if !errors.As(err, &se) || !se.Conflict() {
		t.Errorf("same name without proof: %v, want 409", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	_, err = enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "edge-01", Key: other})
	if !errors.As(err, &se) || !se.Conflict() {
		t.Errorf("same name with another key: %v, want 409", err)
	}

	// With the node's key (the node is not connected) its token is re-issued.
	again, err := enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "edge-01", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || again.Token == first.Token || !again.Reissued {
		t.Errorf("re-enrollment = %+v, want the same node with a new token", again)
	}

	// A renewal presents the node's current token; the replaced one is refused.
	renewed, err := enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "edge-01", Key: key,
		NodeID: first.ID, Token: again.Token, Now: time.Now().Add(time.Minute)})
	if err != nil || renewed.ID != first.ID {
		t.Fatalf("renewal = %+v, %v", renewed, err)
	}
	_, err = enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "edge-01", Key: key,
		NodeID: first.ID, Token: first.Token, Now: time.Now().Add(2 * time.Minute)})
	if !errors.As(err, &se) || !se.Conflict() {
		t.Errorf("renewal with a revoked token: %v, want 409", err)
	}

	_, err = enroll.Enroll(ctx, ts.Client(), u, "wrong-token-wrong-token", enroll.Request{Name: "edge-02"})
	if !errors.Is(err, enroll.ErrTokenRejected) {
		t.Errorf("wrong token: %v, want ErrTokenRejected", err)
	}
	_, err = enroll.Enroll(ctx, ts.Client(), u, token, enroll.Request{Name: "bad\x01name"})
	if !errors.As(err, &se) || se.StatusCode != 400 || se.Message != "name must not contain control characters" {
		t.Errorf("bad name: %v, want a 400 StatusError with the server's sentence", err)
	}
}
