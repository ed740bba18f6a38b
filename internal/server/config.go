package server

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/lormas/lormas-agent/internal/envconf"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/secret"
)

// Config is lormas-server's configuration, read from the environment by
// LoadConfig. The struct tags are the single source of `lormas-server help`.
type Config struct {
	ListenAddr string `env:"LISTEN_ADDR" envDefault:":3000" help:"address to listen on (the agent's default SERVER_URL is ws://localhost:3000)"`
	DataDir    string `env:"DATA_DIR" envDefault:"./data" help:"directory of the SQLite database (lormas.db); created 0700"`

	AdminToken          secret.Value `env:"ADMIN_TOKEN" help:"admin bearer token for /api (at least 16 characters); when unset, generated on first start into DATA_DIR/admin-token (0600), printed by lormas-server admin-token"`
	AdminTokenFile      string       `env:"ADMIN_TOKEN_FILE" help:"file holding ADMIN_TOKEN (trimmed)"`
	JWTSecret           secret.Value `env:"JWT_SECRET" help:"HS256 key for node tokens (at least 32 bytes); generated and stored in the database when unset"`
	JWTSecretFile       string       `env:"JWT_SECRET_FILE" help:"file holding JWT_SECRET (trimmed)"`
	EnrollmentToken     secret.Value `env:"ENROLLMENT_TOKEN" help:"token agents present to POST /api/nodes/enroll (at least 16 characters); generated when unset"`
	EnrollmentTokenFile string       `env:"ENROLLMENT_TOKEN_FILE" help:"file holding ENROLLMENT_TOKEN (trimmed)"`
	// EnrollmentTokenExport is where a generated enrollment token is written
	// (mode 0640) for agents to read; see the package documentation.
	EnrollmentTokenExport string `env:"ENROLLMENT_TOKEN_EXPORT_FILE" shown:"DATA_DIR/enrollment-token" help:"where a GENERATED enrollment token is written (0640) for agents, e.g. a volume shared with them; not written when ENROLLMENT_TOKEN is given"`

	NodeTokenTTL   time.Duration `env:"NODE_TOKEN_TTL" envDefault:"0s" help:"lifetime of issued node tokens; 0 = no expiry; when set, tokens issued without an expiry are refused too, a session ends when its token expires (close 4001 \"token expired\"), and agents announcing token_refresh get a fresh token after 2/3 of the lifetime"`
	CommandTimeout time.Duration `env:"COMMAND_TIMEOUT" envDefault:"60s" help:"how long POST /api/nodes/{id}/commands waits for the command_result (then 504)"`
	PingInterval   time.Duration `env:"PING_INTERVAL" envDefault:"30s" help:"interval of application {\"type\":\"ping\"} messages to agents; an agent silent for 3 intervals is disconnected"`
	// HeartbeatFlushInterval: reports.go.
	HeartbeatFlushInterval time.Duration `env:"HEARTBEAT_FLUSH_INTERVAL" envDefault:"10s" help:"heartbeats and agent details are kept in memory (the API shows them at once) and written to the database in batches this often (spread over half of it) and at shutdown; a crash loses at most this much of them"`

	AuthFailureBurst    int           `env:"AUTH_FAILURE_BURST" envDefault:"10" help:"failed enrollments and refused node tokens allowed per client address before 429 (token bucket burst)"`
	AuthFailureInterval time.Duration `env:"AUTH_FAILURE_INTERVAL" envDefault:"6s" help:"one more failure is allowed per client address every interval once the burst is spent"`

	TLSCertFile string `env:"TLS_CERT_FILE" help:"PEM certificate chain: serve https and wss (with TLS_KEY_FILE)"`
	TLSKeyFile  string `env:"TLS_KEY_FILE" help:"PEM private key for TLS_CERT_FILE"`

	logging.Settings // LOG_LEVEL, LOG_FORMAT

	MaxBodyBytes    int64 `env:"MAX_BODY_BYTES" envDefault:"1048576" help:"largest accepted REST request body (then 413)"`
	MaxMessageBytes int64 `env:"MAX_MESSAGE_BYTES" envDefault:"16777216" help:"largest WebSocket frame accepted from an agent (then close 1009)"`
}

// Minimum secret lengths: short tokens are guessable, and HS256 wants a key
// at least as long as its 256-bit hash (RFC 7518 section 3.2).
const (
	minTokenLength  = 16
	minSecretLength = 32
)

// ConfigError lists every problem found in the configuration, one line
// each, "VARIABLE: problem"; lormas-server prints one per line and exits 2.
type ConfigError = envconf.Error

// LoadConfig reads the configuration from environ (a map of variable to
// value, as os.Environ split) and validates it. Secrets given as *_FILE are
// read and trimmed here. On any problem the error is a *ConfigError.
func LoadConfig(environ map[string]string) (Config, error) {
	var problems envconf.Problems
	cfg := envconf.Parse[Config](environ, &problems)
	cfg.resolve(&problems)
	if err := problems.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Environ turns os.Environ-style "K=V" pairs into the map LoadConfig takes.
func Environ(pairs []string) map[string]string { return env.ToMap(pairs) }

// resolve reads *_FILE secrets and validates every field into p.
func (c *Config) resolve(p *envconf.Problems) {
	secrets := []struct {
		name    string
		value   *secret.Value
		file    string
		minimum int
	}{
		{"ADMIN_TOKEN", &c.AdminToken, c.AdminTokenFile, minTokenLength},
		{"JWT_SECRET", &c.JWTSecret, c.JWTSecretFile, minSecretLength},
		{"ENROLLMENT_TOKEN", &c.EnrollmentToken, c.EnrollmentTokenFile, minTokenLength},
	}
	for _, s := range secrets {
		*s.value = p.Secret(s.name, *s.value, s.file)
		if v := s.value.Reveal(); v != "" {
			if len(v) < s.minimum {
				p.Add(s.name, "must be at least %d characters long (got %d)", s.minimum, len(v))
			}
			if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				p.Add(s.name, "must not contain spaces or control characters")
			}
		}
	}

	if strings.TrimSpace(c.ListenAddr) == "" {
		p.Add("LISTEN_ADDR", "must not be empty")
	}
	if strings.TrimSpace(c.DataDir) == "" {
		p.Add("DATA_DIR", "must not be empty")
	}
	if c.EnrollmentTokenExport == "" {
		c.EnrollmentTokenExport = filepath.Join(c.DataDir, "enrollment-token")
	}
	if c.NodeTokenTTL < 0 {
		p.Add("NODE_TOKEN_TTL", "must not be negative (0 = no expiry), got %s", c.NodeTokenTTL)
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{
		{"COMMAND_TIMEOUT", c.CommandTimeout},
		{"HEARTBEAT_FLUSH_INTERVAL", c.HeartbeatFlushInterval},
		{"PING_INTERVAL", c.PingInterval},
	} {
		if d.val <= 0 {
			p.Add(d.name, "must be positive, got %s", d.val)
		}
	}
	if c.AuthFailureBurst < 1 || c.AuthFailureBurst > 1_000_000 {
		p.Add("AUTH_FAILURE_BURST", "must be between 1 and 1000000, got %d", c.AuthFailureBurst)
	}
	if c.AuthFailureInterval < time.Millisecond {
		p.Add("AUTH_FAILURE_INTERVAL", "must be at least 1ms, got %s", c.AuthFailureInterval)
	}
	c.Settings.Check(p.Add)
	if c.MaxBodyBytes < 1024 {
		p.Add("MAX_BODY_BYTES", "must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if c.MaxMessageBytes < 64<<10 || c.MaxMessageBytes > 1<<30 {
		p.Add("MAX_MESSAGE_BYTES", "must be between 65536 and 1073741824, got %d", c.MaxMessageBytes)
	}
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		p.Add("TLS_CERT_FILE", "must be set together with TLS_KEY_FILE")
	case c.TLSKeyFile == "" && c.TLSCertFile != "":
		p.Add("TLS_KEY_FILE", "must be set together with TLS_CERT_FILE")
	case c.TLSCertFile != "":
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			p.Add("TLS_CERT_FILE", "with TLS_KEY_FILE: %v", err)
		}
	}
}

// Variable documents one configuration variable.
type Variable = envconf.Variable

// Variables lists every configuration variable in table order.
func Variables() []Variable {
	return envconf.Of[Config]()
}

// Usage is the configuration table `lormas-server help` prints.
func Usage() string {
	return envconf.Text(Variables(), 80)
}
