package enroll

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// KeyFileName is the file in STATE_DIR holding the node's Ed25519 private
// key (PKCS #8, PEM), made at the first enrollment. It proves the node's
// identity when its token is re-issued; it never leaves the machine.
const KeyFileName = "node-key"

// Modes of the key file and of the state directory created for it: the
// agent's user alone may read them (as the stored token).
const (
	keyFileMode  = 0o600
	stateDirMode = 0o700
)

// ErrNoKey is matched (errors.Is) when STATE_DIR holds no node key.
var ErrNoKey = errors.New("no node key")

// KeyPath is dir/node-key.
func KeyPath(dir string) string { return filepath.Join(dir, KeyFileName) }

// LoadKey reads the node key from dir; ErrNoKey (wrapped) when there is
// none. The error never contains key material.
func LoadKey(dir string) (ed25519.PrivateKey, error) {
	path := KeyPath(dir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read node key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("node key %s: not a PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("node key %s: not a PKCS #8 key", path)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("node key %s: %T, want an Ed25519 key", path, k)
	}
	return key, nil
}

// LoadOrCreateKey returns the node key in dir, making one (and dir, mode
// 0700) when there is none. created reports whether it was made now.
func LoadOrCreateKey(dir string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = LoadKey(dir)
	if err == nil || !errors.Is(err, ErrNoKey) {
		return key, false, err
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate node key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("encode node key: %w", err)
	}
	err = writePrivate(dir, KeyFileName, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if errors.Is(err, fs.ErrExist) {
		key, err = LoadKey(dir) // another start stored one meanwhile
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("store node key: %w", err)
	}
	return key, true, nil
}

// writePrivate writes data to dir/name with mode 0600 (dir created 0700)
// atomically: a temporary file renamed into place, so a crash never leaves
// half a key. An existing file is not replaced: two starts racing keep the
// first key.
func writePrivate(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, stateDirMode); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the link
	if err := f.Chmod(keyFileMode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Link, not rename: fails with EEXIST instead of replacing a key
	// another process stored meanwhile.
	return os.Link(f.Name(), filepath.Join(dir, name))
}

// Proof is the identity proof of an enrollment request (the optional
// fields of protocol.EnrollRequest).
type Proof struct {
	PublicKey string // standard base64 of the 32-byte public key
	Timestamp int64  // Unix seconds
	Signature string // standard base64
}

// Sign proves possession of key for an enrollment of name at time at.
func Sign(key ed25519.PrivateKey, name string, at time.Time) Proof {
	pub := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	ts := at.Unix()
	sig := ed25519.Sign(key, protocol.EnrollProofMessage(name, pub, ts))
	return Proof{PublicKey: pub, Timestamp: ts, Signature: base64.StdEncoding.EncodeToString(sig)}
}
