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

// ErrNoKey is matched (errors.Is) when the state directory holds no node
// key.
var ErrNoKey = errors.New("no node key")

// KeyPath is Dir/node-key.
func (s State) KeyPath() string { return filepath.Join(s.Dir, KeyFileName) }

// Key reads the node key; ErrNoKey (wrapped) when there is none. The error
// never contains key material.
func (s State) Key() (ed25519.PrivateKey, error) {
	path := s.KeyPath()
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

// KeyOrCreate returns the node key, making one (and Dir, mode 0700) when
// there is none. created reports whether it was made now.
func (s State) KeyOrCreate() (key ed25519.PrivateKey, created bool, err error) {
	key, err = s.Key()
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
	err = s.write(KeyFileName, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), false)
	if errors.Is(err, fs.ErrExist) {
		key, err = s.Key() // another start stored one meanwhile
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("store node key: %w", err)
	}
	return key, true, nil
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
