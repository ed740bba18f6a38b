package enroll_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/server"
)

// TestAgainstLormasServer runs the client against the real server handler:
// both sides of the contract agree.
func TestAgainstLormasServer(t *testing.T) {
	const token = "enrollment-token-for-the-test"
	cfg, err := server.LoadConfig(map[string]string{"DATA_DIR": t.TempDir(), "ENROLLMENT_TOKEN": token,
		"ADMIN_TOKEN": "admin-token-for-the-test"})
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

	first, err := enroll.Enroll(context.Background(), ts.Client(), u, token, "edge-01")
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == "" || first.Name != "edge-01" || first.Token == "" {
		t.Fatalf("first = %+v", first)
	}
	again, err := enroll.Enroll(context.Background(), ts.Client(), u, token, "edge-01")
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || again.Token == first.Token {
		t.Errorf("re-enrollment = %+v, want the same node with a new token", again)
	}
	_, err = enroll.Enroll(context.Background(), ts.Client(), u, "wrong-token-wrong-token", "edge-02")
	if !errors.Is(err, enroll.ErrTokenRejected) {
		t.Errorf("wrong token: %v, want ErrTokenRejected", err)
	}
	_, err = enroll.Enroll(context.Background(), ts.Client(), u, token, "bad\x01name")
	var se *enroll.StatusError
	if !errors.As(err, &se) || se.StatusCode != 400 || se.Message != "name must not contain control characters" {
		t.Errorf("bad name: %v, want a 400 StatusError with the server's sentence", err)
	}
}
