package enroll

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

func TestKeyIsCreatedPrivateAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	state := State{Dir: dir}
	if _, err := state.Key(); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Key of an empty dir = %v, want ErrNoKey", err)
	}
	key, created, err := state.KeyOrCreate()
	if err != nil || !created || len(key) != ed25519.PrivateKeySize {
		t.Fatalf("KeyOrCreate = %d bytes, %v, %v", len(key), created, err)
	}
	st, err := os.Stat(state.KeyPath())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", st.Mode().Perm())
	}
	again, created, err := state.KeyOrCreate()
	if err != nil || created || !key.Equal(again) {
		t.Errorf("second KeyOrCreate: created=%v err=%v same=%v, want the stored key", created, err, key.Equal(again))
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s", len(entries), KeyFileName)
	}
}

func TestKeyCorruptIsAnError(t *testing.T) {
	dir := t.TempDir()
	state := State{Dir: dir}
	if err := os.WriteFile(state.KeyPath(), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := state.KeyOrCreate()
	if err == nil || errors.Is(err, ErrNoKey) || strings.Contains(err.Error(), "not a key") {
		t.Errorf("corrupt key: %v, want an error that neither replaces it nor echoes it", err)
	}
	if b, _ := os.ReadFile(state.KeyPath()); string(b) != "not a key" {
		t.Errorf("a corrupt key file was replaced")
	}
}

func TestSignBindsNameKeyAndTime(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_800_000_000, 0)
	p := Sign(key, "edge-1", at)
	pub, _ := base64.StdEncoding.DecodeString(p.PublicKey)
	sig, _ := base64.StdEncoding.DecodeString(p.Signature)
	if p.Timestamp != at.Unix() || !ed25519.Verify(pub, protocol.EnrollProofMessage("edge-1", p.PublicKey, p.Timestamp), sig) {
		t.Fatalf("proof %+v does not verify", p)
	}
	want := "lormas-enroll-v1\nedge-1\n" + p.PublicKey + "\n1800000000"
	if got := string(protocol.EnrollProofMessage("edge-1", p.PublicKey, p.Timestamp)); got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	for _, m := range [][]byte{
		protocol.EnrollProofMessage("edge-2", p.PublicKey, p.Timestamp),
		protocol.EnrollProofMessage("edge-1", p.PublicKey, p.Timestamp+1),
	} {
		if ed25519.Verify(pub, m, sig) {
			t.Errorf("the signature also verifies %q", m)
		}
	}
}
