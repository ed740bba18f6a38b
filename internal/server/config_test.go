package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/envconf"
	"github.com/lormas/lormas-agent/internal/logging"
)

func TestConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr: ":3000", DataDir: "./data", EnrollmentTokenExport: "data/enrollment-token",
		CommandTimeout: 60 * time.Second, PingInterval: 30 * time.Second,
		Settings:     logging.Settings{LogLevel: "info", LogFormat: "text"},
		MaxBodyBytes: 1 << 20, MaxMessageBytes: 16 << 20,
		AuthFailureBurst: 10, AuthFailureInterval: 6 * time.Second,
		HeartbeatFlushInterval: 10 * time.Second,
	}
	if fmt.Sprintf("%+v", cfg) != fmt.Sprintf("%+v", want) {
		t.Errorf("defaults = %+v\nwant       %+v", cfg, want)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSecretFilesAreTrimmed(t *testing.T) {
	cfg, err := LoadConfig(map[string]string{
		"ADMIN_TOKEN_FILE":      writeFile(t, "admin", "  admin-token-from-file-123\n"),
		"JWT_SECRET_FILE":       writeFile(t, "jwt", strings.Repeat("j", 40)+"\r\n"),
		"ENROLLMENT_TOKEN_FILE": writeFile(t, "enroll", "enrollment-token-from-file\n\n"),
		"DATA_DIR":              "/var/lib/lormas",
		"NODE_TOKEN_TTL":        "720h",
		"LOG_LEVEL":             "DEBUG",
		"LOG_FORMAT":            "json",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AdminToken.Reveal(); got != "admin-token-from-file-123" {
		t.Errorf("admin token = %q", got)
	}
	if got := cfg.JWTSecret.Reveal(); got != strings.Repeat("j", 40) {
		t.Errorf("JWT secret = %q", got)
	}
	if got := cfg.EnrollmentToken.Reveal(); got != "enrollment-token-from-file" {
		t.Errorf("enrollment token = %q", got)
	}
	if cfg.EnrollmentTokenExport != "/var/lib/lormas/enrollment-token" || cfg.NodeTokenTTL != 720*time.Hour ||
		cfg.LogLevel != "debug" || cfg.LogFormat != "json" {
		t.Errorf("cfg = %+v", cfg)
	}
	// A printed configuration never shows a secret.
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, "admin-token-from-file") || strings.Contains(s, "jjjj") || strings.Contains(s, "enrollment-token-from-file") {
			t.Errorf("printed config shows a secret: %s", s)
		}
	}
}

// A duration given without a unit says which unit to add, not Go's
// "missing unit in duration".
func TestConfigDurationWithoutUnit(t *testing.T) {
	_, err := LoadConfig(map[string]string{"COMMAND_TIMEOUT": "60"})
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0] != `COMMAND_TIMEOUT: "60" has no unit: add a unit: 60s (or 60m, 60ms)` {
		t.Fatalf("LoadConfig = %v, want the unit hint", err)
	}
}

func TestConfigProblemsAreListedTogether(t *testing.T) {
	empty := writeFile(t, "empty", "\n")
	_, err := LoadConfig(map[string]string{
		"ADMIN_TOKEN":           "short",
		"JWT_SECRET":            strings.Repeat("j", 40),
		"JWT_SECRET_FILE":       writeFile(t, "jwt", strings.Repeat("j", 40)),
		"ENROLLMENT_TOKEN_FILE": empty,
		"COMMAND_TIMEOUT":       "soon",
		"NODE_TOKEN_TTL":        "-1h",
		"PING_INTERVAL":         "0s",
		"LOG_LEVEL":             "loud",
		"LOG_FORMAT":            "xml",
		"MAX_BODY_BYTES":        "12",
		"TLS_CERT_FILE":         "/nonexistent/cert.pem",
		"LISTEN_ADDR":           " ",
	})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("LoadConfig = %v, want a *ConfigError", err)
	}
	want := []string{
		"ADMIN_TOKEN: must be at least 16 characters",
		"JWT_SECRET: set only one of JWT_SECRET and JWT_SECRET_FILE",
		"ENROLLMENT_TOKEN_FILE: " + empty + ": file is empty",
		`COMMAND_TIMEOUT: time: invalid duration "soon"`,
		"NODE_TOKEN_TTL: must not be negative",
		"PING_INTERVAL: must be positive",
		`LOG_LEVEL: "loud" is not one of debug, info, warn (or warning), error`,
		`LOG_FORMAT: "xml" is not one of text, json`,
		"MAX_BODY_BYTES: must be at least 1024",
		"TLS_KEY_FILE: must be set together with TLS_CERT_FILE",
		"LISTEN_ADDR: must not be empty",
	}
	text := strings.Join(ce.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("problems lack %q:\n%s", w, text)
		}
	}
	if len(ce.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(want), text)
	}
	if strings.Contains(text, "short") {
		t.Errorf("a problem shows the secret value:\n%s", text)
	}
}

// The agent and the server accept the same LOG_LEVEL values
// (internal/logging.Settings; the agent's test is in internal/config).
func TestConfigLogLevels(t *testing.T) {
	for _, level := range []string{"debug", "info", "warn", "warning", "error", "WARNING", " Info "} {
		cfg, err := LoadConfig(map[string]string{"LOG_LEVEL": level, "LOG_FORMAT": "JSON"})
		if err != nil {
			t.Errorf("LOG_LEVEL=%q: %v", level, err)
			continue
		}
		if _, err := logging.New(io.Discard, cfg.LogLevel, cfg.LogFormat); err != nil {
			t.Errorf("LOG_LEVEL=%q accepted but the logger refuses it: %v", level, err)
		}
	}
	for _, level := range []string{"trace", "warnings", "fatal"} {
		_, err := LoadConfig(map[string]string{"LOG_LEVEL": level})
		if p := envconf.Lines(err); len(p) != 1 || !strings.HasPrefix(p[0], "LOG_LEVEL: ") {
			t.Errorf("LOG_LEVEL=%q: problems %q, want one about LOG_LEVEL", level, p)
		}
	}
}

func TestConfigMissingSecretFile(t *testing.T) {
	_, err := LoadConfig(map[string]string{"ADMIN_TOKEN_FILE": "/nonexistent/admin"})
	if err == nil || !strings.Contains(err.Error(), "ADMIN_TOKEN_FILE: open /nonexistent/admin") {
		t.Errorf("LoadConfig = %v, want the unreadable file named", err)
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	u := Usage()
	for _, v := range []string{"LISTEN_ADDR", "ADMIN_TOKEN", "ADMIN_TOKEN_FILE", "JWT_SECRET", "JWT_SECRET_FILE",
		"ENROLLMENT_TOKEN", "ENROLLMENT_TOKEN_FILE", "ENROLLMENT_TOKEN_EXPORT_FILE", "DATA_DIR", "NODE_TOKEN_TTL",
		"COMMAND_TIMEOUT", "PING_INTERVAL", "TLS_CERT_FILE", "TLS_KEY_FILE", "LOG_LEVEL", "LOG_FORMAT",
		"MAX_BODY_BYTES", "MAX_MESSAGE_BYTES"} {
		if !regexp.MustCompile(`(?m)^` + v + `( |$)`).MatchString(u) {
			t.Errorf("usage lacks %s", v)
		}
	}
	for i, l := range strings.Split(u, "\n") { // `lormas-server help`, in an 80-column terminal
		if len(l) > 80 {
			t.Errorf("usage line %d is %d columns wide: %q", i+1, len(l), l)
		}
	}
	if !strings.Contains(u, ":3000") || !strings.Contains(u, "60s") {
		t.Errorf("usage lacks defaults:\n%s", u)
	}
}
