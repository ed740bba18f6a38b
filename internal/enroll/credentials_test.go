package enroll

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/secret"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// testToken looks like a JWT; tests assert it never appears in error text.
const testToken = "eyJhbGciOiJIUzI1NiJ9.eyJub2RlSWQiOiJuMSJ9.c2VjcmV0LXNpZ25hdHVyZQ"

// inState returns credentials whose state directory is a fresh one.
func inState(t *testing.T, c Credentials) Credentials {
	t.Helper()
	c.State = State{Dir: filepath.Join(t.TempDir(), "state")}
	return c
}

func TestTokenFileTrimmedAndReRead(t *testing.T) {
	dir := t.TempDir()
	file := testsupport.WriteFile(t, dir, "token", "  first-token\n")
	next := inState(t, Credentials{NodeTokenFile: file}).Token
	if got, err := next(); err != nil || got != "first-token" {
		t.Fatalf("token = %q, %v; want first-token (trimmed)", got, err)
	}
	testsupport.WriteFile(t, dir, "token", "rotated-token\r\n")
	if got, err := next(); err != nil || got != "rotated-token" {
		t.Fatalf("after rotation token = %q, %v; want rotated-token", got, err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	_, err := next()
	if err == nil || !strings.HasPrefix(err.Error(), "NODE_TOKEN_FILE: open ") {
		t.Errorf("removed file: err = %v", err)
	}
	testsupport.WriteFile(t, dir, "token", "two words\n")
	if _, err := next(); err == nil || strings.Contains(err.Error(), "two words") {
		t.Errorf("token with whitespace: err = %v (must fail without echoing)", err)
	}
}

func TestTokenEnvAndStored(t *testing.T) {
	cfg := inState(t, Credentials{NodeToken: secret.New(testToken)})
	if got, _ := cfg.Token(); got != testToken {
		t.Errorf("NODE_TOKEN source = %q", got)
	}
	if cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment with NODE_TOKEN")
	}

	cfg = inState(t, Credentials{EnrollmentToken: secret.New("enroll-me")})
	if !cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment false before enrollment")
	}
	if _, err := cfg.Token(); !errors.Is(err, ErrNoToken) {
		t.Errorf("before enrollment: err = %v, want ErrNoToken", err)
	}
	if got, err := cfg.EnrollmentTokenValue(); err != nil || got != "enroll-me" {
		t.Errorf("EnrollmentTokenValue = %q, %v", got, err)
	}
	if err := cfg.State.StoreToken(testToken); err != nil {
		t.Fatal(err)
	}
	if cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment after StoreToken")
	}
	if got, err := cfg.Token(); err != nil || got != testToken {
		t.Errorf("stored token = %q, %v", got, err)
	}
	st, err := os.Stat(cfg.State.TokenPath())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, %v; want 0600", st.Mode(), err)
	}
	dst, err := os.Stat(cfg.State.Dir)
	if err != nil || dst.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, %v; want 0700", dst.Mode(), err)
	}
	entries, _ := os.ReadDir(cfg.State.Dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s", len(entries), TokenFileName)
	}

	// Later starts: no token variable at all, the stored token is enough.
	again := Credentials{State: cfg.State}
	if got, _ := again.Token(); got != testToken || again.NeedsEnrollment() {
		t.Errorf("restart token = %q, needs enrollment %v", got, again.NeedsEnrollment())
	}
	if err := cfg.State.StoreToken("bad token"); err == nil || strings.Contains(err.Error(), "bad token") {
		t.Errorf("StoreToken of a token with a space: %v", err)
	}
}

func TestEnrollmentTokenFileReadFresh(t *testing.T) {
	dir := t.TempDir()
	file := testsupport.WriteFile(t, dir, "enroll", "one\n")
	cfg := inState(t, Credentials{EnrollmentTokenFile: file})
	testsupport.WriteFile(t, dir, "enroll", "two\n")
	if got, err := cfg.EnrollmentTokenValue(); err != nil || got != "two" {
		t.Errorf("EnrollmentTokenValue = %q, %v; want two", got, err)
	}
}

// jwtWith builds a node token with the given claims (signature unchecked).
func jwtWith(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

// The token source is the node's credential only: a token from
// token_refresh (STATE_DIR/node-token.refreshed) is the agent's to prefer,
// and what a server planted in STATE_DIR/node-token under an operator's
// NODE_TOKEN_FILE is never read (review M4).
func TestTokenIsTheCredential(t *testing.T) {
	now := time.Now().Unix()
	claims := func(node string, iat, exp int64) string {
		return jwtWith(fmt.Sprintf(`{"nodeId":%q,"iat":%d,"exp":%d}`, node, iat, exp))
	}
	configured := claims("n1", now-100, now+60)
	dir := t.TempDir()
	file := testsupport.WriteFile(t, dir, "token", configured+"\n")
	state := State{Dir: filepath.Join(dir, "state")}
	cfg := Credentials{NodeTokenFile: file, State: state}
	if err := cfg.State.StoreToken(claims("n1", now, now+60)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Refreshed().Save(claims("n1", now, now+60)); err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.Token(); got != configured {
		t.Errorf("NODE_TOKEN_FILE: a stored token was used instead of the file's")
	}
	static := Credentials{NodeToken: secret.New(configured), State: state}
	if got, _ := static.Token(); got != configured {
		t.Errorf("NODE_TOKEN: a stored token was used instead")
	}
}

// RefreshedTokenFile keeps refreshed tokens apart from the credential: an
// enrolled agent's only credential (STATE_DIR/node-token) is replaced only
// once the server accepted the refreshed token, never by Save alone; an
// operator's token file is never written.
func TestRefreshedTokenFile(t *testing.T) {
	enrolledTok, refreshed := jwtWith(`{"nodeId":"n1","iat":1}`), jwtWith(`{"nodeId":"n1","iat":2}`)
	t.Run("enrolled", func(t *testing.T) {
		cfg := inState(t, Credentials{EnrollmentToken: secret.New("enroll-me")})
		if err := cfg.State.StoreToken(enrolledTok); err != nil {
			t.Fatal(err)
		}
		rt := cfg.Refreshed()
		if got, err := rt.Load(); got != "" || err != nil {
			t.Fatalf("Load with nothing kept = %q, %v", got, err)
		}
		if err := rt.Save(refreshed); err != nil {
			t.Fatal(err)
		}
		if got, _ := cfg.Token(); got != enrolledTok {
			t.Errorf("Save replaced the enrolled credential")
		}
		if got, _ := rt.Load(); got != refreshed {
			t.Errorf("Load after Save: another token")
		}
		if st, err := os.Stat(rt.Path()); err != nil || st.Mode().Perm() != 0o600 || filepath.Base(rt.Path()) != RefreshedFileName {
			t.Errorf("refreshed token file %s: %v, %v; want mode 0600", rt.Path(), st, err)
		}
		if err := rt.Accepted(refreshed); err != nil {
			t.Fatal(err)
		}
		if got, _ := cfg.Token(); got != refreshed {
			t.Errorf("Accepted did not make the refreshed token the credential")
		}
		if _, err := os.Stat(rt.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refreshed token file still there after Accepted: %v", err)
		}
		// Refused: discarded, the credential stays.
		if err := rt.Save(jwtWith(`{"nodeId":"n1","iat":3}`)); err != nil {
			t.Fatal(err)
		}
		if err := rt.Discard(); err != nil {
			t.Fatal(err)
		}
		if got, _ := rt.Load(); got != "" {
			t.Errorf("Load after Discard = %q", got)
		}
		if got, _ := cfg.Token(); got != refreshed {
			t.Errorf("Discard changed the credential")
		}
		if err := rt.Discard(); err != nil {
			t.Errorf("Discard with nothing kept: %v", err)
		}
		if err := rt.Save("bad token"); err == nil || strings.Contains(err.Error(), "bad token") {
			t.Errorf("Save of a token with a space: %v", err)
		}
	})
	t.Run("token file", func(t *testing.T) {
		dir := t.TempDir()
		file := testsupport.WriteFile(t, dir, "token", enrolledTok+"\n")
		cfg := Credentials{NodeTokenFile: file, State: State{Dir: filepath.Join(dir, "state")}}
		rt := cfg.Refreshed()
		if err := rt.Save(refreshed); err != nil {
			t.Fatal(err)
		}
		if err := rt.Accepted(refreshed); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(file); strings.TrimSpace(string(b)) != enrolledTok {
			t.Errorf("Accepted wrote the operator's token file")
		}
		if _, err := os.Stat(cfg.State.TokenPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Accepted wrote STATE_DIR/node-token under NODE_TOKEN_FILE: %v", err)
		}
		if got, _ := rt.Load(); got != refreshed {
			t.Errorf("Accepted removed the refreshed token under NODE_TOKEN_FILE")
		}
	})
}

func TestCredentialHint(t *testing.T) {
	dir := t.TempDir()
	file := testsupport.WriteFile(t, dir, "token", testToken+"\n")
	state := State{Dir: "/s"}
	for _, c := range []struct {
		creds Credentials
		want  []string
	}{
		{Credentials{NodeTokenFile: file}, []string{"NODE_TOKEN_FILE (" + file + ")"}},
		{Credentials{NodeToken: secret.New(testToken), State: state}, []string{"set NODE_TOKEN", "/s/node-token"}},
		{Credentials{EnrollmentToken: secret.New("e"), State: state}, []string{"into /s/node-token", "remove /s/node-token and /s/node-key"}},
	} {
		got := c.creds.Hint()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("hint %q lacks %q", got, w)
			}
		}
		if strings.Contains(got, testToken) {
			t.Errorf("hint shows the token")
		}
	}
}
