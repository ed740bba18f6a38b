package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/config"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// signNode signs a node token of node with iat and exp.
func signNode(t *testing.T, node, jti string, iat, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"nodeId": node, "jti": jti, "iat": iat.Unix(), "exp": exp.Unix()}).SignedString([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Review M4, against the whole program: a token a hostile server (or a man
// in the middle of ws://) planted through token_refresh, plausible enough
// to be dialled with and issued later than the token the operator then
// wrote into NODE_TOKEN_FILE, is refused by the real server once, dropped
// from STATE_DIR, and the agent connects with the operator's token.
func TestPlantedRefreshedTokenIsDropped(t *testing.T) {
	t.Chdir(t.TempDir())
	now := time.Now()
	planted := signNode(t, "node-7", "planted", now.Add(2*time.Minute), now.Add(time.Hour))
	rotated := signNode(t, "node-7", "rotated", now, now.Add(time.Hour))
	srv := agenttest.NewServer(t, agenttest.ServerOptions{Token: rotated})
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	plantedFile := filepath.Join(state, config.RefreshedTokenName)
	if err := os.WriteFile(plantedFile, []byte(planted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testsupport.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, nil, []string{"SERVER_URL=" + srv.URL(), "NODE_TOKEN_FILE=" + tokenFile, "STATE_DIR=" + state,
			"RECONNECT_DELAY=10ms", "RECONNECT_MAX_DELAY=50ms", "HEALTH_ADDR=", "LOG_LEVEL=debug", "LOG_FORMAT=json"}, &stdout, &stderr)
	}()
	srv.Expect(protocol.TypeAgentIdentify)
	ups := srv.Upgrades()
	if len(ups) != 2 || ups[0].Status != http.StatusUnauthorized || ups[0].Query.Get("token") != planted ||
		ups[1].Status != http.StatusSwitchingProtocols || ups[1].Query.Get("token") != rotated {
		t.Errorf("%d dials; want the planted token refused, then the operator's token accepted", len(ups))
	}
	if _, err := os.Stat(plantedFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the planted token is still in STATE_DIR: %v", err)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d\n%s", code, stderr.String())
	}
	out := stdout.String() + stderr.String()
	if !strings.Contains(out, "server refused the refreshed node token") {
		t.Errorf("no log line about the dropped token:\n%s", out)
	}
	for _, tok := range []string{planted, rotated} {
		if strings.Contains(out, tok) {
			t.Errorf("a token in the output")
		}
	}
}

// fakeRenewals answers renewals: 200 with a new token for the tokens in
// ok, 400 (not a token of this server) for others, 503 while busy.
type fakeRenewals struct {
	mu        sync.Mutex
	ok        map[string]bool
	busy      bool
	presented []string
}

func (f *fakeRenewals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body protocol.EnrollRequest
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.presented = append(f.presented, body.Token)
	ok, busy := f.ok[body.Token], f.busy
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case busy:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":"busy"}`)
	case !ok:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"token is not a token of node \"node-7\" issued by this server"}`)
	default:
		_ = json.NewEncoder(w).Encode(map[string]string{"id": "node-7", "name": "edge-7", "token": "renewed." + body.Token[len(body.Token)-8:] + ".sig"})
	}
}

// An enrolled agent handed several tokens over one session never dialled
// with them: its stored token may be older than the server's current and
// previous ones, so the renewal presents the newest refreshed token first;
// a planted one only costs that attempt.
func TestRenewerPresentsTheNewestToken(t *testing.T) {
	now := time.Now()
	stale := signNode(t, "node-7", "stale", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	newest := signNode(t, "node-7", "newest", now.Add(-90*time.Minute), now.Add(-30*time.Minute))
	planted := signNode(t, "node-7", "planted", now.Add(-time.Hour), now.Add(-time.Minute))
	for _, c := range []struct {
		name      string
		stored    string
		refreshed string
		ok        []string
		busy      bool
		presented []string
		wantErr   bool
		kept      bool // the refreshed token is still there afterwards
	}{
		{"refreshed is the server's", stale, newest, []string{newest}, false, []string{newest}, false, false},
		{"refreshed was planted", newest, planted, []string{newest}, false, []string{planted, newest}, false, false},
		{"implausible refreshed is not presented", newest, signNode(t, "node-7", "y30k", time.Date(30000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(30000, 1, 2, 0, 0, 0, 0, time.UTC)), []string{newest}, false, []string{newest}, false, false},
		{"server busy: stop, keep the token", stale, newest, []string{newest}, true, []string{newest}, true, true},
		{"both refused: keep the token", stale, planted, nil, false, []string{planted, stale}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeRenewals{ok: map[string]bool{}, busy: c.busy}
			for _, tok := range c.ok {
				f.ok[tok] = true
			}
			hs := httptest.NewServer(f)
			defer hs.Close()
			state := filepath.Join(t.TempDir(), "state")
			cfg, err := config.Load([]string{"SERVER_URL=" + hs.URL, "ENROLLMENT_TOKEN=enroll-0123456789", "STATE_DIR=" + state, "NODE_NAME=edge-7"})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := enroll.LoadOrCreateKey(state); err != nil {
				t.Fatal(err)
			}
			if err := cfg.StoreToken(c.stored); err != nil {
				t.Fatal(err)
			}
			if err := cfg.RefreshedTokens().Save(c.refreshed); err != nil {
				t.Fatal(err)
			}
			renew := renewer(cfg, nil, slog.New(slog.DiscardHandler))
			err = renew(t.Context(), c.stored)
			if (err != nil) != c.wantErr {
				t.Fatalf("renew: %v, want error %v", err, c.wantErr)
			}
			f.mu.Lock()
			presented := f.presented
			f.mu.Unlock()
			if strings.Join(presented, ",") != strings.Join(c.presented, ",") {
				t.Errorf("presented %d tokens, want %d in order", len(presented), len(c.presented))
			}
			if kept, _ := cfg.RefreshedTokens().Load(); (kept != "") != c.kept {
				t.Errorf("refreshed token kept: %v, want %v", kept != "", c.kept)
			}
			if got, _ := cfg.StoredToken(); !c.wantErr && !strings.HasPrefix(got, "renewed.") {
				t.Errorf("the renewed token was not stored")
			}
		})
	}
}
