package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
)

const enrollSecret = "enrollment-secret-0123456789"

func parse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := endpoint.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestEnrollSendsTheContract(t *testing.T) {
	var got struct {
		method, path, auth, contentType string
		body                            map[string]any
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path = r.Method, r.URL.Path
		got.auth, got.contentType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"n-1","name":"node-a","token":"jwt.jwt.jwt","extra":true}`)
	}))
	defer ts.Close()

	// SERVER_URL as the agent has it: ws:// with a path prefix and a
	// trailing slash.
	server := parse(t, "ws"+strings.TrimPrefix(ts.URL, "http")+"/lormas/")
	res, err := Enroll(context.Background(), ts.Client(), server, "  "+enrollSecret+"\n", Request{Name: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if res != (Result{ID: "n-1", Name: "node-a", Token: "jwt.jwt.jwt"}) {
		t.Errorf("result = %+v", res)
	}
	if got.method != "POST" || got.path != "/lormas/api/nodes/enroll" || got.auth != "Bearer "+enrollSecret ||
		got.contentType != "application/json" || got.body["name"] != "node-a" || len(got.body) != 1 {
		t.Errorf("request = %+v", got)
	}
}

func TestEnrollReissueIsSuccess(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"n-1","token":"t"}`) // 200, and no name
	}))
	defer ts.Close()
	res, err := Enroll(context.Background(), nil, parse(t, ts.URL), enrollSecret, Request{Name: "node-a"})
	if err != nil || res.ID != "n-1" || res.Name != "node-a" || res.Token != "t" {
		t.Errorf("Enroll = %+v, %v", res, err)
	}
}

func TestEnrollOverTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"n-2","name":"tls","token":"t2"}`)
	}))
	defer ts.Close()
	// wss:// maps to https://.
	server := parse(t, "wss"+strings.TrimPrefix(ts.URL, "https"))
	res, err := Enroll(context.Background(), ts.Client(), server, enrollSecret, Request{Name: "tls"})
	if err != nil || res.ID != "n-2" {
		t.Errorf("Enroll over TLS = %+v, %v", res, err)
	}
}

func TestEnrollErrors(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		body      string
		rejected  bool
		temporary bool
		wantErr   string
	}{
		{"wrong token", 401, `{"error":"invalid enrollment token"}`, true, false, "enrollment token rejected (HTTP 401: invalid enrollment token)"},
		{"forbidden", 403, `{"error":"enrollment disabled"}`, true, false, "enrollment token rejected (HTTP 403: enrollment disabled)"},
		{"bad name", 400, `{"error":"name must not contain control characters"}`, false, false, "HTTP 400 Bad Request: name must not contain control characters"},
		{"server error", 500, `{"error":"database: locked"}`, false, true, "HTTP 500 Internal Server Error: database: locked"},
		{"proxy page", 502, "<html>Bad Gateway</html>\n<body>...</body>", false, true, "HTTP 502 Bad Gateway: <html>Bad Gateway</html>"},
		{"echoing server", 400, `{"error":"bad header Bearer ` + enrollSecret + `"}`, false, false, "bad header Bearer REDACTED"},
		{"not JSON", 201, `<html>`, false, false, "not the expected JSON"},
		{"no token", 201, `{"id":"x"}`, false, false, "lacks the node id or token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
			}))
			defer ts.Close()
			_, err := Enroll(context.Background(), ts.Client(), parse(t, ts.URL), enrollSecret, Request{Name: "node-a"})
			if err == nil {
				t.Fatal("Enroll succeeded")
			}
			if !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), `enroll node "node-a"`) {
				t.Errorf("error = %q, want it to contain %q", err, c.wantErr)
			}
			if strings.Contains(err.Error(), enrollSecret) {
				t.Errorf("error shows the enrollment token: %q", err)
			}
			if got := errors.Is(err, ErrTokenRejected); got != c.rejected {
				t.Errorf("errors.Is(ErrTokenRejected) = %v, want %v", got, c.rejected)
			}
			var se *StatusError
			if errors.As(err, &se) && se.Temporary() != c.temporary {
				t.Errorf("Temporary = %v, want %v", se.Temporary(), c.temporary)
			}
		})
	}
}

func TestEnrollNetworkError(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	server := parse(t, ts.URL)
	ts.Close() // nothing listens any more
	_, err := Enroll(context.Background(), nil, server, enrollSecret, Request{Name: "node-a"})
	if err == nil || !strings.Contains(err.Error(), "/api/nodes/enroll") || strings.Contains(err.Error(), enrollSecret) {
		t.Errorf("error = %v, want the URL named and no token", err)
	}
	var se *StatusError
	if errors.As(err, &se) {
		t.Errorf("a network error is a StatusError")
	}
}

func TestEnrollCancelled(t *testing.T) {
	block := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Enroll(ctx, ts.Client(), parse(t, ts.URL), enrollSecret, Request{Name: "node-a"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
}

func TestEnrollRefusesEmptyInput(t *testing.T) {
	u := parse(t, "ws://localhost:3000")
	for _, c := range []struct{ token, name string }{{"", "n"}, {"  ", "n"}, {enrollSecret, ""}} {
		if _, err := Enroll(context.Background(), nil, u, c.token, Request{Name: c.name}); err == nil {
			t.Errorf("Enroll(%q, %q) succeeded", c.token, Request{Name: c.name})
		}
	}
	if _, err := Enroll(context.Background(), nil, nil, enrollSecret, Request{Name: "n"}); err == nil {
		t.Errorf("Enroll with a nil URL succeeded")
	}
}

// With a key the request carries the proof; a renewal also the node id and
// its token, which never appears in an error even when a server echoes it.
func TestEnrollSendsProofAndRenewal(t *testing.T) {
	var body protocol.EnrollRequest
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body = protocol.EnrollRequest{}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body.NodeID != "" {
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":"token `+body.Token+` was rotated"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"n-1","name":"node-a","token":"t","expiresAt":"2030-01-01T00:00:00Z"}`)
	}))
	defer ts.Close()
	key, _, err := State{Dir: t.TempDir()}.KeyOrCreate()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_800_000_000, 0)
	res, err := Enroll(context.Background(), ts.Client(), parse(t, ts.URL), enrollSecret, Request{Name: "node-a", Key: key, Now: at})
	if err != nil || res.ExpiresAt != "2030-01-01T00:00:00Z" || res.Reissued {
		t.Fatalf("Enroll = %+v, %v", res, err)
	}
	want := Sign(key, "node-a", at)
	if body.PublicKey != want.PublicKey || body.Timestamp != want.Timestamp || body.Signature != want.Signature {
		t.Errorf("request %+v lacks the proof %+v", body, want)
	}
	const nodeToken = "header.payload.signature-of-the-node"
	_, err = Enroll(context.Background(), ts.Client(), parse(t, ts.URL), enrollSecret, Request{Name: "node-a", Key: key, NodeID: "n-1", Token: nodeToken})
	var se *StatusError
	if !errors.As(err, &se) || !se.Conflict() || body.NodeID != "n-1" || body.Token != nodeToken {
		t.Errorf("renewal: %v (request %+v), want a 409 with nodeId and token sent", err, body)
	}
	if strings.Contains(err.Error(), nodeToken) {
		t.Errorf("the node token is in the error: %v", err)
	}
	for _, r := range []Request{{Name: "n", NodeID: "x"}, {Name: "n", NodeID: "x", Token: "t"}} {
		if _, err := Enroll(context.Background(), ts.Client(), parse(t, ts.URL), enrollSecret, r); err == nil {
			t.Errorf("incomplete renewal %+v accepted", r)
		}
	}
}
