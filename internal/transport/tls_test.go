package transport_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/transport"
)

func TestTLSConfig(t *testing.T) {
	ca := agenttest.NewCA(t, "tls-config-ca")
	caFile := ca.CertFile(t)
	certFile, keyFile := ca.ClientFiles(t, "node-1")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	otherCert, _ := ca.ClientFiles(t, "node-2")

	tests := []struct {
		name               string
		ca, cert, key      string
		insecure           bool
		wantErr            string // substring; "" = success
		wantCerts          int
		wantInsecureVerify bool
	}{
		{name: "system roots only"},
		{name: "with CA file", ca: caFile},
		{name: "client certificate", ca: caFile, cert: certFile, key: keyFile, wantCerts: 1},
		{name: "insecure", insecure: true, wantInsecureVerify: true},
		{name: "missing CA file", ca: missing, wantErr: missing},
		{name: "CA file without PEM", ca: garbage, wantErr: "TLS CA file " + garbage + ": no PEM certificate found"},
		{name: "cert without key", cert: certFile, wantErr: "TLS certificate file " + certFile + " given without a key file"},
		{name: "key without cert", key: keyFile, wantErr: "TLS key file " + keyFile + " given without a certificate file"},
		{name: "missing cert file", cert: missing, key: keyFile, wantErr: missing},
		{name: "missing key file", cert: certFile, key: missing, wantErr: missing},
		{name: "key of another certificate", cert: otherCert, key: keyFile, wantErr: otherCert},
		{name: "garbage certificate", cert: garbage, key: keyFile, wantErr: garbage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := transport.TLSConfig(tc.ca, tc.cert, tc.key, tc.insecure)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			// nil verifies against the system roots; a CA file adds to them.
			if got, want := cfg.RootCAs != nil, tc.ca != ""; got != want {
				t.Errorf("RootCAs set = %v, want %v", got, want)
			}
			if got := len(cfg.Certificates); got != tc.wantCerts {
				t.Errorf("got %d client certificates, want %d", got, tc.wantCerts)
			}
			if cfg.InsecureSkipVerify != tc.wantInsecureVerify {
				t.Errorf("InsecureSkipVerify = %v, want %v", cfg.InsecureSkipVerify, tc.wantInsecureVerify)
			}
		})
	}
}
