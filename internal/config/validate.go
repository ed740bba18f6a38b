package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/envconf"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/secret"
)

// Limits of the numeric settings.
const (
	minMessageBytes       = 1 << 10
	maxMessageBytes       = 256 << 20
	maxConcurrentCommands = 4096
	maxOutboxLimit        = 1_000_000
	minPendingBytes       = 1 << 20
	maxPendingBytes       = 64 << 30
	pendingPerMessage     = 8         // MAX_PENDING_BYTES / MAX_MESSAGE_BYTES at least: a container's quarter holds two largest frames
	maxPidsLimit          = 4_194_304 // the kernel's pid_max ceiling
	maxLogFiles           = 100
	minLogStreamBuffer    = 256 << 10
	maxLogStreamBuffer    = 1 << 30
	maxResultStoreBytes   = 4 << 30
)

// ByteSize is a byte count given as a number or a size string ("1m",
// "4MiB"; protocol.ParseSize syntax, every unit binary).
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	n, err := protocol.ParseSize(string(text))
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

// validate adds one line per problem to p (which already holds the
// variables whose value did not parse, and drops further problems of
// them).
func (c *Config) validate(p *envconf.Problems) {
	add := p.Add

	if u, err := endpoint.Parse(c.ServerURL); err != nil {
		add("SERVER_URL", "%v", err)
	} else if s, fixed, ok := endpoint.APISuffix(u); ok && s != "/api" {
		// Never right: the agent would dial .../api/ws/nodes/api/ws/nodes.
		// A bare /api could be a proxy's base path; the agent warns at start.
		add("SERVER_URL", "%s ends in %s, which the agent appends itself: set SERVER_URL=%s", endpoint.Redact(c.ServerURL), s, fixed)
	}
	c.validateTokens(p)
	if c.NodeName == "" {
		add("NODE_NAME", "not set and the host name is unknown")
	} else if len(c.NodeName) > 253 || strings.ContainsFunc(c.NodeName, isControl) {
		add("NODE_NAME", "must be at most 253 printable characters")
	}
	if strings.ContainsFunc(c.NodeID, isControl) {
		add("NODE_ID", "must not contain control characters")
	}
	if c.StateDir == "" {
		add("STATE_DIR", "must not be empty")
	}
	c.Settings.Check(add)
	if c.DiskLimitMode != "warn" && c.DiskLimitMode != "strict" {
		add("DISK_LIMIT_MODE", "%q is not one of warn, strict", c.DiskLimitMode)
	}

	for _, d := range []struct {
		key string
		val time.Duration
	}{
		{"HEARTBEAT_INTERVAL", c.HeartbeatInterval},
		{"RECONNECT_DELAY", c.ReconnectDelay},
		{"RECONNECT_MAX_DELAY", c.ReconnectMaxDelay},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"DOCKER_TIMEOUT", c.DockerTimeout},
	} {
		if d.val <= 0 {
			add(d.key, "must be a positive duration such as 10s, got %s", d.val)
		}
	}
	if c.ReconnectDelay > 0 && c.ReconnectMaxDelay > 0 && c.ReconnectMaxDelay < c.ReconnectDelay {
		add("RECONNECT_MAX_DELAY", "%s is less than RECONNECT_DELAY (%s)", c.ReconnectMaxDelay, c.ReconnectDelay)
	}

	inRange(add, "MAX_RECONNECT_ATTEMPTS", int64(c.MaxReconnectAttempts), 0, 1<<31-1)
	inRange(add, "MAX_CONCURRENT_COMMANDS", int64(c.MaxConcurrentCommands), 1, maxConcurrentCommands)
	inRange(add, "MAX_MESSAGE_BYTES", int64(c.MaxMessageBytes), minMessageBytes, maxMessageBytes)
	inRange(add, "OUTBOX_LIMIT", int64(c.OutboxLimit), 1, maxOutboxLimit)
	inRange(add, "MAX_PENDING_BYTES", int64(c.MaxPendingBytes), minPendingBytes, maxPendingBytes)
	if c.MaxMessageBytes > 0 && c.MaxPendingBytes >= minPendingBytes && c.MaxPendingBytes < pendingPerMessage*c.MaxMessageBytes {
		add("MAX_PENDING_BYTES", "%d is less than %d times MAX_MESSAGE_BYTES (%d): a container's quarter must hold a command of the largest frame once decoded; set at least %d",
			c.MaxPendingBytes, pendingPerMessage, c.MaxMessageBytes, pendingPerMessage*c.MaxMessageBytes)
	}
	inRange(add, "RESULT_STORE_BYTES", int64(c.ResultStoreBytes), 1, maxResultStoreBytes)
	inRange(add, "MAX_SESSIONS", int64(c.MaxSessions), 1, 10000)
	inRange(add, "CONTAINER_PIDS_LIMIT", c.ContainerPidsLimit, 1, maxPidsLimit)
	inRange(add, "CONTAINER_LOG_MAX_FILE", int64(c.ContainerLogMaxFile), 1, maxLogFiles)
	inRange(add, "LOG_STREAM_BUFFER", int64(c.LogStreamBuffer), minLogStreamBuffer, maxLogStreamBuffer)
	if n, err := protocol.ParseSize(c.ContainerLogMaxSize); err != nil {
		add("CONTAINER_LOG_MAX_SIZE", "%v", err)
	} else if n < minMessageBytes {
		add("CONTAINER_LOG_MAX_SIZE", "must be at least 1k")
	}

	if len(c.VolumeRoots) == 0 {
		add("VOLUME_ROOTS", "must list at least one directory")
	}
	for i, r := range c.VolumeRoots {
		switch {
		case !filepath.IsAbs(r):
			add("VOLUME_ROOTS", "%q is not an absolute path", r)
		case filepath.Clean(r) == "/":
			add("VOLUME_ROOTS", `"/" would allow every host path`)
		}
		// A root inside another would be on the way to bind sources that
		// a workload bound under the outer root could write.
		for _, o := range c.VolumeRoots[:i] {
			a, b := filepath.Clean(r), filepath.Clean(o)
			if filepath.IsAbs(a) && filepath.IsAbs(b) && (a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")) {
				add("VOLUME_ROOTS", "%q and %q nest: a root may not lie inside another", o, r)
			}
		}
	}

	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		if c.TLSCertFile == "" {
			add("TLS_CERT_FILE", "must be set together with TLS_KEY_FILE")
		} else {
			add("TLS_KEY_FILE", "must be set together with TLS_CERT_FILE")
		}
	}
	for _, f := range []struct{ key, path string }{
		{"TLS_CA_FILE", c.TLSCAFile}, {"TLS_CERT_FILE", c.TLSCertFile}, {"TLS_KEY_FILE", c.TLSKeyFile},
	} {
		if f.path != "" {
			if err := readable(f.path); err != nil {
				add(f.key, "%v", err)
			}
		}
	}

	if c.HealthAddr != "" {
		if err := checkListenAddr(c.HealthAddr); err != nil {
			add("HEALTH_ADDR", "%v", err)
		}
	}
}

// validateTokens applies the token-source rule: exactly one of NODE_TOKEN,
// NODE_TOKEN_FILE, ENROLLMENT_TOKEN, ENROLLMENT_TOKEN_FILE, or none when an
// enrolled token is already stored in STATE_DIR. Messages never include a
// token value.
func (c *Config) validateTokens(p *envconf.Problems) {
	var set []string
	if !c.NodeToken.IsZero() {
		set = append(set, "NODE_TOKEN")
	}
	if c.NodeTokenFile != "" {
		set = append(set, "NODE_TOKEN_FILE")
	}
	if !c.EnrollmentToken.IsZero() {
		set = append(set, "ENROLLMENT_TOKEN")
	}
	if c.EnrollmentTokenFile != "" {
		set = append(set, "ENROLLMENT_TOKEN_FILE")
	}
	state := enroll.State{Dir: c.StateDir}
	switch {
	case len(set) > 1:
		p.Add(set[0], "set only one of NODE_TOKEN, NODE_TOKEN_FILE, ENROLLMENT_TOKEN, ENROLLMENT_TOKEN_FILE (set: %s)", strings.Join(set, ", "))
		return
	case len(set) == 0:
		if _, err := state.Token(); err != nil {
			p.Add("NODE_TOKEN", "required: set NODE_TOKEN, NODE_TOKEN_FILE, ENROLLMENT_TOKEN or ENROLLMENT_TOKEN_FILE")
		}
		return
	}
	var err error
	switch set[0] {
	case "NODE_TOKEN":
		err = enroll.CheckToken(c.NodeToken.Reveal())
	case "NODE_TOKEN_FILE":
		_, err = enroll.ReadToken(c.NodeTokenFile)
	case "ENROLLMENT_TOKEN":
		err = enroll.CheckToken(c.EnrollmentToken.Reveal())
	case "ENROLLMENT_TOKEN_FILE":
		// Only needed while no token has been stored by an earlier
		// enrollment. A file that does not exist yet is awaited at
		// enrollment (compose: the server writes it on its first start).
		if _, serr := state.Token(); serr != nil {
			if _, err = enroll.ReadToken(c.EnrollmentTokenFile); errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		}
	}
	if err != nil {
		p.Add(set[0], "%v", err)
	}
}

func inRange(add func(key, format string, args ...any), key string, val, lo, hi int64) {
	if val < lo || val > hi {
		add(key, "%d is out of range %d..%d", val, lo, hi)
	}
}

func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port or :port: %w", err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("port %q must be a number 1..65535", port)
	}
	return nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// readable checks that path can be opened for reading.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return secret.WithPermissionFix(path, err)
	}
	return f.Close()
}
