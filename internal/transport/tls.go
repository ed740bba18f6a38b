package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig builds the client TLS configuration for wss:// (docs/protocol.md): the
// server certificate is verified against the system roots plus the PEM
// certificates in caFile (optional); certFile and keyFile (both or neither)
// give the agent a client certificate for mTLS; insecure disables
// verification (the caller warns about it at every dial).
//
// Errors name the file and the problem. The result is a template: clone it
// per dial (Dial does).
func TLSConfig(caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // opt-in, warned at every dial

	// Without a CA file RootCAs stays nil: crypto/tls then verifies against
	// the system roots, which it loads at the first wss:// handshake, so an
	// agent on ws:// never parses them (about 240 KB of heap).
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificate found", caFile)
		}
		cfg.RootCAs = roots
	}

	switch {
	case certFile == "" && keyFile == "":
	case certFile == "":
		return nil, fmt.Errorf("TLS key file %s given without a certificate file", keyFile)
	case keyFile == "":
		return nil, fmt.Errorf("TLS certificate file %s given without a key file", certFile)
	default:
		cert, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadKeyPair is tls.LoadX509KeyPair with errors that say which file failed.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS key file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's errors do not name files; its texts distinguish
		// certificate from key problems, so say both.
		return tls.Certificate{}, fmt.Errorf("TLS client certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if len(cert.Certificate) == 0 {
		return tls.Certificate{}, errors.New("TLS certificate file " + certFile + ": no certificate found")
	}
	return cert, nil
}
