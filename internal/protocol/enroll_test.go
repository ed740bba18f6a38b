package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

// TestEnrollWireFormat pins the enrollment bodies byte for byte, as both
// the agent (internal/enroll) and lormas-server (internal/server) put them
// on the wire through these types: field names, order, and which fields
// are left out when empty (a seed-era request is {"name"} alone).
func TestEnrollWireFormat(t *testing.T) {
	for _, c := range []struct {
		name string
		v    any
		want string
	}{
		{"seed-era request", EnrollRequest{Name: "edge-01"}, `{"name":"edge-01"}`},
		{"request with proof", EnrollRequest{Name: "edge-01", PublicKey: "cHVi", Timestamp: 1767225600, Signature: "c2ln"},
			`{"name":"edge-01","publicKey":"cHVi","timestamp":1767225600,"signature":"c2ln"}`},
		{"renewal", EnrollRequest{Name: "edge-01", PublicKey: "cHVi", Timestamp: 1767225600, Signature: "c2ln", NodeID: "n-1", Token: "a.b.c"},
			`{"name":"edge-01","publicKey":"cHVi","timestamp":1767225600,"signature":"c2ln","nodeId":"n-1","token":"a.b.c"}`},
		{"response", EnrollResponse{ID: "n-1", Name: "edge-01", Token: "a.b.c", ExpiresAt: "2030-01-01T00:00:00Z"},
			`{"id":"n-1","name":"edge-01","token":"a.b.c","expiresAt":"2030-01-01T00:00:00Z"}`},
		{"response without expiry", EnrollResponse{ID: "n-1", Name: "edge-01", Token: "a.b.c"},
			`{"id":"n-1","name":"edge-01","token":"a.b.c"}`},
		{"error", ErrorResponse{Error: `a node named "edge-01" already exists`}, `{"error":"a node named \"edge-01\" already exists"}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%s: %s\nwant %s", c.name, b, c.want)
		}
		back := reflect.New(reflect.TypeOf(c.v))
		if err := json.Unmarshal([]byte(c.want), back.Interface()); err != nil || !reflect.DeepEqual(back.Elem().Interface(), c.v) {
			t.Errorf("%s: decoded %+v, %v; want %+v", c.name, back.Elem().Interface(), err, c.v)
		}
	}
}

func TestEnrollBodiesNeverPrintTheirToken(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.secret-token-value"
	req := EnrollRequest{Name: "n1", NodeID: "id1", Token: tok}
	res := EnrollResponse{ID: "id1", Name: "n1", Token: tok}
	for _, s := range []string{
		fmt.Sprint(req), fmt.Sprintf("%+v", req), fmt.Sprintf("%#v", req), fmt.Sprintf("%v", &req),
		fmt.Sprint(res), fmt.Sprintf("%+v", res), fmt.Sprintf("%#v", res), fmt.Sprintf("%v", &res),
	} {
		if strings.Contains(s, "secret-token") {
			t.Errorf("printed the token: %s", s)
		}
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "req", req, "res", res, "refresh", TokenRefresh{Token: tok})
	if strings.Contains(logs.String(), "secret-token") {
		t.Errorf("a JSON log printed the token: %s", logs.String())
	}
	// JSON still carries it: the wire is unchanged.
	b, err := json.Marshal(res)
	if err != nil || !strings.Contains(string(b), tok) {
		t.Fatalf("JSON %s, %v: want the token on the wire", b, err)
	}
}
