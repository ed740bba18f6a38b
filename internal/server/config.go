package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/lormas/lormas-agent/internal/envdoc"
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

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"text" help:"text (colour on a terminal) or json"`

	MaxBodyBytes    int64 `env:"MAX_BODY_BYTES" envDefault:"1048576" help:"largest accepted REST request body (then 413)"`
	MaxMessageBytes int64 `env:"MAX_MESSAGE_BYTES" envDefault:"16777216" help:"largest WebSocket frame accepted from an agent (then close 1009)"`
}

// Minimum secret lengths: short tokens are guessable, and HS256 wants a key
// at least as long as its 256-bit hash (RFC 7518 section 3.2).
const (
	minTokenLength  = 16
	minSecretLength = 32
)

// ConfigError lists every problem found in the configuration, one sentence
// each; lormas-server prints one per line and exits 2.
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "invalid configuration:\n" + strings.Join(e.Problems, "\n")
}

// LoadConfig reads the configuration from environ (a map of variable to
// value, as os.Environ split) and validates it. Secrets given as *_FILE are
// read and trimmed here. On any problem the error is a *ConfigError.
func LoadConfig(environ map[string]string) (Config, error) {
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Environment: environ})
	var problems []string
	failed := map[string]bool{}
	if err != nil {
		problems, failed = envProblems(err, environ)
	}
	for _, p := range cfg.resolve() {
		// A variable that did not parse is reported once, not again for
		// the zero value it left behind.
		if name, _, _ := strings.Cut(p, " "); !failed[strings.TrimSuffix(name, ":")] {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return Config{}, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// Environ turns os.Environ-style "K=V" pairs into the map LoadConfig takes.
func Environ(pairs []string) map[string]string {
	m := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// resolve reads *_FILE secrets and validates every field, returning one
// sentence per problem.
func (c *Config) resolve() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

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
		if s.file != "" {
			if !s.value.IsZero() {
				add("%s and %s_FILE are both set; set one", s.name, s.name)
				continue
			}
			b, err := os.ReadFile(s.file)
			if err != nil {
				add("%s_FILE: %v", s.name, err)
				continue
			}
			v := strings.TrimSpace(string(b))
			if v == "" {
				add("%s_FILE: %s is empty", s.name, s.file)
				continue
			}
			*s.value = secret.New(v)
		}
		if v := s.value.Reveal(); v != "" {
			if strings.TrimSpace(v) != v {
				*s.value = secret.New(strings.TrimSpace(v))
				v = s.value.Reveal()
			}
			if len(v) < s.minimum {
				add("%s must be at least %d characters long (got %d)", s.name, s.minimum, len(v))
			}
			if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				add("%s must not contain spaces or control characters", s.name)
			}
		}
	}

	if strings.TrimSpace(c.ListenAddr) == "" {
		add("LISTEN_ADDR must not be empty")
	}
	if strings.TrimSpace(c.DataDir) == "" {
		add("DATA_DIR must not be empty")
	}
	if c.EnrollmentTokenExport == "" {
		c.EnrollmentTokenExport = filepath.Join(c.DataDir, "enrollment-token")
	}
	if c.NodeTokenTTL < 0 {
		add("NODE_TOKEN_TTL must not be negative (0 = no expiry), got %s", c.NodeTokenTTL)
	}
	if c.CommandTimeout <= 0 {
		add("COMMAND_TIMEOUT must be positive, got %s", c.CommandTimeout)
	}
	if c.HeartbeatFlushInterval <= 0 {
		add("HEARTBEAT_FLUSH_INTERVAL must be positive, got %s", c.HeartbeatFlushInterval)
	}
	if c.PingInterval <= 0 {
		add("PING_INTERVAL must be positive, got %s", c.PingInterval)
	}
	if c.AuthFailureBurst < 1 || c.AuthFailureBurst > 1_000_000 {
		add("AUTH_FAILURE_BURST must be between 1 and 1000000, got %d", c.AuthFailureBurst)
	}
	if c.AuthFailureInterval < time.Millisecond {
		add("AUTH_FAILURE_INTERVAL must be at least 1ms, got %s", c.AuthFailureInterval)
	}
	switch strings.ToLower(strings.TrimSpace(c.LogLevel)) {
	case "debug", "info", "warn", "warning", "error":
	default:
		add("LOG_LEVEL must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		add("LOG_FORMAT must be text or json, got %q", c.LogFormat)
	}
	if c.MaxBodyBytes < 1024 {
		add("MAX_BODY_BYTES must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if c.MaxMessageBytes < 64<<10 || c.MaxMessageBytes > 1<<30 {
		add("MAX_MESSAGE_BYTES must be between 65536 and 1073741824, got %d", c.MaxMessageBytes)
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		add("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
	case c.TLSCertFile != "":
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			add("TLS_CERT_FILE/TLS_KEY_FILE: %v", err)
		}
	}
	return p
}

// envProblems renders caarlos0/env's aggregated errors one per line, naming
// the environment variable instead of the Go field, and returns the names of
// the variables that failed to parse.
func envProblems(err error, environ map[string]string) (problems []string, failed map[string]bool) {
	var errs []error
	var agg env.AggregateError
	if errors.As(err, &agg) {
		errs = agg.Errors
	} else {
		errs = []error{err}
	}
	failed = map[string]bool{}
	for _, e := range errs {
		var pe env.ParseError
		if errors.As(e, &pe) {
			name := envName(pe.Name)
			failed[name] = true
			if pe.Type == reflect.TypeFor[time.Duration]() {
				if hint := envdoc.DurationHint(name, environ[name]); hint != "" {
					problems = append(problems, hint)
					continue
				}
			}
			problems = append(problems, fmt.Sprintf("%s: invalid value: %v", name, pe.Err))
			continue
		}
		problems = append(problems, e.Error())
	}
	return problems, failed
}

func envName(field string) string {
	if f, ok := reflect.TypeFor[Config]().FieldByName(field); ok {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		return name
	}
	return field
}

// Variable documents one configuration variable.
type Variable = envdoc.Variable

// Variables lists every configuration variable in table order.
func Variables() []Variable {
	return envdoc.Of[Config]()
}

// Usage is the configuration table `lormas-server help` prints.
func Usage() string {
	return envdoc.Text(Variables(), 80)
}
