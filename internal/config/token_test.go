package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTokenFileTrimmedAndReRead(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "token", "  first-token\n")
	cfg := mustLoad(t, "", "NODE_TOKEN_FILE="+file)
	next := cfg.TokenSource()
	if got, err := next(); err != nil || got != "first-token" {
		t.Fatalf("token = %q, %v; want first-token (trimmed)", got, err)
	}
	writeFile(t, dir, "token", "rotated-token\r\n")
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
	writeFile(t, dir, "token", "two words\n")
	if _, err := next(); err == nil || strings.Contains(err.Error(), "two words") {
		t.Errorf("token with whitespace: err = %v (must fail without echoing)", err)
	}
}

func TestTokenSourceEnvAndStored(t *testing.T) {
	cfg := mustLoad(t, "", "NODE_TOKEN="+testToken)
	if got, _ := cfg.TokenSource()(); got != testToken {
		t.Errorf("NODE_TOKEN source = %q", got)
	}
	if cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment with NODE_TOKEN")
	}

	cfg = mustLoad(t, "", "ENROLLMENT_TOKEN=enroll-me")
	if !cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment false before enrollment")
	}
	if _, err := cfg.TokenSource()(); !errors.Is(err, ErrNoToken) {
		t.Errorf("before enrollment: err = %v, want ErrNoToken", err)
	}
	if got, err := cfg.EnrollmentTokenValue(); err != nil || got != "enroll-me" {
		t.Errorf("EnrollmentTokenValue = %q, %v", got, err)
	}
	if err := cfg.StoreToken(testToken); err != nil {
		t.Fatal(err)
	}
	if cfg.NeedsEnrollment() {
		t.Error("NeedsEnrollment after StoreToken")
	}
	if got, err := cfg.TokenSource()(); err != nil || got != testToken {
		t.Errorf("stored token = %q, %v", got, err)
	}
	st, err := os.Stat(cfg.StoredTokenPath())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, %v; want 0600", st.Mode(), err)
	}
	dst, err := os.Stat(cfg.StateDir)
	if err != nil || dst.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, %v; want 0700", dst.Mode(), err)
	}
	entries, _ := os.ReadDir(cfg.StateDir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s", len(entries), StoredTokenName)
	}

	// Later starts: no token variable at all, the stored token is enough.
	again, err := load([]string{"STATE_DIR=" + cfg.StateDir}, filepath.Join(t.TempDir(), ".env"))
	if err != nil {
		t.Fatalf("restart with stored token: %v", err)
	}
	if got, _ := again.TokenSource()(); got != testToken {
		t.Errorf("restart token = %q", got)
	}
	if err := cfg.StoreToken("bad token"); err == nil || strings.Contains(err.Error(), "bad token") {
		t.Errorf("StoreToken of a token with a space: %v", err)
	}
}

func TestEnrollmentTokenFileReadFresh(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "enroll", "one\n")
	cfg := mustLoad(t, "", "ENROLLMENT_TOKEN_FILE="+file)
	writeFile(t, dir, "enroll", "two\n")
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
func TestTokenSourceIsTheCredential(t *testing.T) {
	now := time.Now().Unix()
	claims := func(node string, iat, exp int64) string {
		return jwtWith(fmt.Sprintf(`{"nodeId":%q,"iat":%d,"exp":%d}`, node, iat, exp))
	}
	configured := claims("n1", now-100, now+60)
	dir := t.TempDir()
	file := writeFile(t, dir, "token", configured+"\n")
	state := filepath.Join(dir, "state")
	cfg := mustLoad(t, "", "NODE_TOKEN_FILE="+file, "STATE_DIR="+state)
	if err := cfg.StoreToken(claims("n1", now, now+60)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.RefreshedTokens().Save(claims("n1", now, now+60)); err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.TokenSource()(); got != configured {
		t.Errorf("NODE_TOKEN_FILE: a stored token was used instead of the file's")
	}
	static := mustLoad(t, "", "NODE_TOKEN="+configured, "STATE_DIR="+state)
	if got, _ := static.TokenSource()(); got != configured {
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
		cfg := mustLoad(t, "", "ENROLLMENT_TOKEN=enroll-me", "STATE_DIR="+filepath.Join(t.TempDir(), "state"))
		if err := cfg.StoreToken(enrolledTok); err != nil {
			t.Fatal(err)
		}
		rt := cfg.RefreshedTokens()
		if got, err := rt.Load(); got != "" || err != nil {
			t.Fatalf("Load with nothing kept = %q, %v", got, err)
		}
		if err := rt.Save(refreshed); err != nil {
			t.Fatal(err)
		}
		if got, _ := cfg.TokenSource()(); got != enrolledTok {
			t.Errorf("Save replaced the enrolled credential")
		}
		if got, _ := rt.Load(); got != refreshed {
			t.Errorf("Load after Save: another token")
		}
		if st, err := os.Stat(rt.Path()); err != nil || st.Mode().Perm() != 0o600 || filepath.Base(rt.Path()) != RefreshedTokenName {
			t.Errorf("refreshed token file %s: %v, %v; want mode 0600", rt.Path(), st, err)
		}
		if err := rt.Accepted(refreshed); err != nil {
			t.Fatal(err)
		}
		if got, _ := cfg.TokenSource()(); got != refreshed {
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
		if got, _ := cfg.TokenSource()(); got != refreshed {
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
		file := writeFile(t, dir, "token", enrolledTok+"\n")
		cfg := mustLoad(t, "", "NODE_TOKEN_FILE="+file, "STATE_DIR="+filepath.Join(dir, "state"))
		rt := cfg.RefreshedTokens()
		if err := rt.Save(refreshed); err != nil {
			t.Fatal(err)
		}
		if err := rt.Accepted(refreshed); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(file); strings.TrimSpace(string(b)) != enrolledTok {
			t.Errorf("Accepted wrote the operator's token file")
		}
		if _, err := os.Stat(cfg.StoredTokenPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Accepted wrote STATE_DIR/node-token under NODE_TOKEN_FILE: %v", err)
		}
		if got, _ := rt.Load(); got != refreshed {
			t.Errorf("Accepted removed the refreshed token under NODE_TOKEN_FILE")
		}
	})
}

func TestCredentialHint(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "token", testToken+"\n")
	for _, c := range []struct {
		env  []string
		want []string
	}{
		{[]string{"NODE_TOKEN_FILE=" + file}, []string{"NODE_TOKEN_FILE (" + file + ")"}},
		{[]string{"NODE_TOKEN=" + testToken, "STATE_DIR=/s"}, []string{"set NODE_TOKEN", "/s/node-token"}},
		{[]string{"ENROLLMENT_TOKEN=e", "STATE_DIR=/s"}, []string{"into /s/node-token", "remove /s/node-token and /s/node-key"}},
	} {
		got := mustLoad(t, "", c.env...).CredentialHint()
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

// A token file the agent's user may not read (written by root, 0600, for
// an agent running as uid 65532) says whose permission is missing and the
// command that fixes it; other errors are left alone.
func TestPermissionDeniedNamesTheFix(t *testing.T) {
	denied := &fs.PathError{Op: "open", Path: "/run/secrets/node-token", Err: fs.ErrPermission}
	err := withPermissionFix("/run/secrets/node-token", denied)
	uid := strconv.Itoa(os.Getuid())
	for _, want := range []string{
		"open /run/secrets/node-token: permission denied",
		"the agent runs as uid " + uid,
		"sudo chown " + uid + " /run/secrets/node-token && sudo chmod 0400 /run/secrets/node-token",
		"the host file mounted at /run/secrets/node-token",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("the fix hides the permission error from errors.Is")
	}
	missing := &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}
	if got := withPermissionFix("/x", missing); got != error(missing) {
		t.Errorf("a missing file got %v", got)
	}
}
