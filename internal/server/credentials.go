package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lormas/lormas-agent/internal/server/store"
)

// Keys of generated secrets in the settings table.
const (
	settingAdminTokenHash  = "admin_token_sha256"
	settingJWTSecret       = "jwt_secret"
	settingEnrollmentToken = "enrollment_token"
)

// Prefixes of generated tokens.
const (
	adminTokenPrefix      = "lormas_admin_"
	enrollmentTokenPrefix = "lormas_enroll_"
)

// credentials are the server's secrets in the form it checks them.
type credentials struct {
	adminHash  [sha256.Size]byte
	jwtKey     []byte
	enrollHash [sha256.Size]byte

	// generatedAdminToken is set only on the start that generated the admin
	// token; generatedAdminFile is the file it was also written to ("" when
	// that failed).
	generatedAdminToken string
	generatedAdminFile  string
	// enrollmentExported is the file a generated enrollment token was
	// written to, "" when the token was configured.
	enrollmentExported string
}

// loadCredentials takes each secret from the configuration, else from the
// database, else generates and stores it. The admin token is stored only as
// a SHA-256 hash: it is shown once and cannot be recovered, only replaced by
// setting ADMIN_TOKEN.
func loadCredentials(ctx context.Context, st *store.Store, cfg Config) (credentials, error) {
	var c credentials

	if !cfg.AdminToken.IsZero() {
		c.adminHash = tokenHash(cfg.AdminToken.Reveal())
	} else {
		var plain string
		stored, created, err := st.SettingOrInit(ctx, settingAdminTokenHash, func() (string, error) {
			t, err := randomToken(adminTokenPrefix)
			if err != nil {
				return "", err
			}
			plain = t
			h := tokenHash(t)
			return hex.EncodeToString(h[:]), nil
		})
		if err != nil {
			return c, fmt.Errorf("admin token: %w", err)
		}
		b, err := hex.DecodeString(stored)
		if err != nil || len(b) != sha256.Size {
			return c, fmt.Errorf("admin token: stored hash is corrupt; set ADMIN_TOKEN")
		}
		copy(c.adminHash[:], b)
		path := AdminTokenPath(cfg.DataDir)
		if created {
			c.generatedAdminToken = plain
			// Kept where the operator can find it again (compose: the data
			// volume), readable by the server's user only. Failing that, the
			// binary prints the token itself so it is not lost.
			if err := writeSecretFile(path, plain, adminFileMode); err == nil {
				c.generatedAdminFile = path
			}
		} else {
			removeStaleAdminFile(path, c.adminHash)
		}
	}

	if !cfg.JWTSecret.IsZero() {
		c.jwtKey = []byte(cfg.JWTSecret.Reveal())
	} else {
		stored, _, err := st.SettingOrInit(ctx, settingJWTSecret, func() (string, error) {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return "", fmt.Errorf("generate JWT secret: %w", err)
			}
			return base64.RawURLEncoding.EncodeToString(b), nil
		})
		if err != nil {
			return c, fmt.Errorf("JWT secret: %w", err)
		}
		key, err := base64.RawURLEncoding.DecodeString(stored)
		if err != nil || len(key) < minSecretLength {
			return c, fmt.Errorf("JWT secret: stored value is corrupt; set JWT_SECRET")
		}
		c.jwtKey = key
	}

	if !cfg.EnrollmentToken.IsZero() {
		c.enrollHash = tokenHash(cfg.EnrollmentToken.Reveal())
	} else {
		token, _, err := st.SettingOrInit(ctx, settingEnrollmentToken, func() (string, error) {
			return randomToken(enrollmentTokenPrefix)
		})
		if err != nil {
			return c, fmt.Errorf("enrollment token: %w", err)
		}
		c.enrollHash = tokenHash(token)
		// Written at every start, so a recreated shared volume is refilled.
		if err := writeExport(cfg.EnrollmentTokenExport, token); err != nil {
			return c, fmt.Errorf("export enrollment token: %w", err)
		}
		c.enrollmentExported = cfg.EnrollmentTokenExport
	}
	return c, nil
}

// AdminTokenFileName is the file in DATA_DIR holding a generated admin
// token; `lormas-server admin-token` prints it.
const AdminTokenFileName = "admin-token"

// AdminTokenPath is DATA_DIR/admin-token.
func AdminTokenPath(dataDir string) string { return filepath.Join(dataDir, AdminTokenFileName) }

// adminFileMode: the server's user only. DATA_DIR already holds the JWT
// secret (in the database) and the enrollment token, so whoever can read
// the file could already mint node tokens and rewrite the stored hash.
const adminFileMode = 0o600

// removeStaleAdminFile deletes DATA_DIR/admin-token when it no longer
// holds the admin token whose hash is stored, so that `lormas-server
// admin-token` never prints a token that does not work. A file that cannot
// be read is left alone.
func removeStaleAdminFile(path string, stored [sha256.Size]byte) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	h := tokenHash(strings.TrimSpace(string(b)))
	if subtle.ConstantTimeCompare(h[:], stored[:]) != 1 {
		_ = os.Remove(path)
	}
}

// Modes of the exported enrollment token and of a directory created for it.
// 0640: the owner (the server) and its group may read it, nobody else. In
// the shipped images server and agent both run as uid/gid 65532, so an agent
// that mounts the export's volume read-only can read it; an agent running as
// another uid needs to share the group.
const (
	exportFileMode = 0o640
	exportDirMode  = 0o750
)

// writeExport writes token to path atomically (temporary file + rename), so
// an agent polling the file never reads half a token.
func writeExport(path, token string) error {
	return writeSecretFile(path, token, exportFileMode)
}

// writeSecretFile writes token and a newline to path with mode, atomically
// (temporary file + rename), creating its directory with exportDirMode.
func writeSecretFile(path, token string, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, exportDirMode); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(token + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
