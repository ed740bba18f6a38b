package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/testsupport"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, returning the
// file names and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lormas-test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServeTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg, err := LoadConfig(testEnv(t.TempDir(), map[string]string{"TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile}))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()

	resp, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("https /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("https /healthz = %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", "https://"+addr+"/api/nodes", jsonBody(`{"name":"tls-node"}`))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var n createdNode
	decode(t, readAll(t, resp), &n)
	resp.Body.Close()

	// wss:// with the node token.
	a := &testAgent{t: t, frames: make(chan []byte, 16), pings: make(chan struct{}, 1), closed: make(chan struct{}), autoPong: true}
	conn, _, err := gws.NewClient(a, &gws.ClientOption{
		Addr:          "wss://" + addr + "/api/ws/nodes",
		RequestHeader: http.Header{"Authorization": {"Bearer " + n.Token}},
		TlsConfig:     &tls.Config{RootCAs: pool},
	})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	go conn.ReadLoop()
	testsupport.WaitFor(t, "wss session", func() bool { return srv.hub.connected(n.ID) })
	// Shutdown closes it with 1001.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if code, _ := a.waitClosed(); code != closeGoingAway {
		t.Errorf("close code at shutdown = %d, want 1001", code)
	}
}
