package enroll

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/secret"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

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
func TestRenewPresentsTheNewestToken(t *testing.T) {
	now := time.Now()
	stale := testsupport.SignNodeToken(t, "node-7", "stale", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	newest := testsupport.SignNodeToken(t, "node-7", "newest", now.Add(-90*time.Minute), now.Add(-30*time.Minute))
	planted := testsupport.SignNodeToken(t, "node-7", "planted", now.Add(-time.Hour), now.Add(-time.Minute))
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
		{"implausible refreshed is not presented", newest, testsupport.SignNodeToken(t, "node-7", "y30k", time.Date(30000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(30000, 1, 2, 0, 0, 0, 0, time.UTC)), []string{newest}, false, []string{newest}, false, false},
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
			creds := Credentials{State: State{Dir: filepath.Join(t.TempDir(), "state")}, EnrollmentToken: secret.New("enroll-0123456789")}
			if _, _, err := creds.State.KeyOrCreate(); err != nil {
				t.Fatal(err)
			}
			if err := creds.State.StoreToken(c.stored); err != nil {
				t.Fatal(err)
			}
			if err := creds.Refreshed().Save(c.refreshed); err != nil {
				t.Fatal(err)
			}
			e, err := NewEnroller(Options{ServerURL: hs.URL, NodeName: "edge-7", Credentials: creds, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			err = e.Renew(t.Context(), c.stored)
			if (err != nil) != c.wantErr {
				t.Fatalf("renew: %v, want error %v", err, c.wantErr)
			}
			f.mu.Lock()
			presented := f.presented
			f.mu.Unlock()
			if strings.Join(presented, ",") != strings.Join(c.presented, ",") {
				t.Errorf("presented %d tokens, want %d in order", len(presented), len(c.presented))
			}
			if kept, _ := creds.Refreshed().Load(); (kept != "") != c.kept {
				t.Errorf("refreshed token kept: %v, want %v", kept != "", c.kept)
			}
			if got, _ := creds.State.Token(); !c.wantErr && !strings.HasPrefix(got, "renewed.") {
				t.Errorf("the renewed token was not stored")
			}
		})
	}
}
