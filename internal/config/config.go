package config

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"golang.org/x/net/http/httpproxy"

	"github.com/lormas/lormas-agent/internal/envconf"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/secret"
)

// Config is the agent's configuration. Every field's tags document it:
// env (the variable), envDefault (its default), help (its meaning) and, for
// defaults computed at run time or applied by a library, shown (the default
// as the table prints it; in parentheses it is a description, not a
// value). The order of the fields is the order of the table.
//
// Nothing is configured through the process environment: the settings of
// libraries (the Docker daemon, host paths, proxies) are fields here,
// which cmd/lormas-agent hands to them, so .env sets them like any other.
type Config struct {
	ServerURL           string       `env:"SERVER_URL" envDefault:"ws://localhost:3000" help:"Lormas server to dial: ws://, wss://, http:// or https:// (http maps to ws, https to wss); the agent connects to ${SERVER_URL}/api/ws/nodes"`
	NodeToken           secret.Value `env:"NODE_TOKEN" help:"node JWT issued by the server; one of NODE_TOKEN, NODE_TOKEN_FILE, ENROLLMENT_TOKEN, ENROLLMENT_TOKEN_FILE is required"`
	NodeTokenFile       string       `env:"NODE_TOKEN_FILE" help:"file holding the node token, re-read before every dial so a rotated token needs no restart (whitespace trimmed); a newer token of the same node from the server (token_refresh, kept in STATE_DIR/node-token.refreshed) is used while it is valid and the server accepts it"`
	NodeTokenInQuery    bool         `env:"NODE_TOKEN_IN_QUERY" envDefault:"true" help:"also send the node token as ?token= in the WebSocket URL, as the seed does; false sends it only in the Authorization header, which the Lormas server reads, keeping it out of proxy and load-balancer logs"`
	EnrollmentToken     secret.Value `env:"ENROLLMENT_TOKEN" help:"enrollment token: with no node token the agent enrolls under NODE_NAME as a NEW node (an existing name needs that node's key), keeps token and key in STATE_DIR, and renews an EXPIRED token with its key; a rotated token or deleted node waits for the operator"`
	EnrollmentTokenFile string       `env:"ENROLLMENT_TOKEN_FILE" help:"file holding the enrollment token (whitespace trimmed; awaited while it does not exist yet)"`
	StateDir            string       `env:"STATE_DIR" envDefault:"/var/lib/lormas-agent" help:"directory for the agent's state (node-token: the enrolled token; node-token.refreshed: the newest token from token_refresh; node-key: the enrollment key; all mode 0600); created with mode 0700"`
	NodeName            string       `env:"NODE_NAME" shown:"(host name)" help:"node name sent in agent_identify and used for enrollment (in Kubernetes: spec.nodeName)"`
	NodeID              string       `env:"NODE_ID" help:"node id for heartbeats and the lormas.node container label when the token carries no nodeId/sub/id claim (else NODE_NAME)"`
	logging.Settings                 // LOG_LEVEL, LOG_FORMAT

	HeartbeatInterval     time.Duration `env:"HEARTBEAT_INTERVAL" envDefault:"10s" help:"interval between heartbeats (Go duration: 10s, 1m)"`
	ReconnectDelay        time.Duration `env:"RECONNECT_DELAY" envDefault:"1s" help:"first reconnect backoff; doubles (full jitter) up to RECONNECT_MAX_DELAY"`
	ReconnectMaxDelay     time.Duration `env:"RECONNECT_MAX_DELAY" envDefault:"60s" help:"reconnect backoff cap"`
	MaxReconnectAttempts  int           `env:"MAX_RECONNECT_ATTEMPTS" envDefault:"0" help:"failed dials in a row before the agent exits with status 1; 0 retries forever"`
	MaxConcurrentCommands int           `env:"MAX_CONCURRENT_COMMANDS" envDefault:"32" help:"commands run in parallel (commands for one container always run one at a time)"`
	MaxMessageBytes       ByteSize      `env:"MAX_MESSAGE_BYTES" envDefault:"1048576" help:"largest incoming frame in bytes (or a size: 1m, 4MiB); larger frames close the connection with 1009"`
	ShutdownTimeout       time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s" help:"on SIGINT/SIGTERM, how long in-flight commands may finish before the agent exits"`
	OutboxLimit           int           `env:"OUTBOX_LIMIT" envDefault:"1000" help:"command results kept while disconnected, sent after the next identify"`
	MaxPendingBytes       ByteSize      `env:"MAX_PENDING_BYTES" envDefault:"64m" help:"memory that commands accepted and not finished may hold (or a size: 64m, 1GiB), a quarter of it per container; a command that does not fit is answered at once with unavailable"`
	ResultStoreBytes      ByteSize      `env:"RESULT_STORE_BYTES" envDefault:"16m" help:"memory for the results kept to answer a command id the server sends again within the hour (or a size: 16m); beyond, the oldest results are evicted: their ids are still never executed again and are answered with a conflict error"`

	VolumeRoots         []string      `env:"VOLUME_ROOTS" envDefault:"/var/lib/lormas/volumes" help:"comma-separated absolute directories (not nested) for bind mounts: each bind source is one directory directly under a root, made by the agent"`
	AllowUnmanaged      bool          `env:"ALLOW_UNMANAGED" envDefault:"false" help:"let the server act on containers this agent did not create"`
	StatusEvents        bool          `env:"STATUS_EVENTS" envDefault:"true" help:"send container_event and inventory messages (false for a server that rejects unknown types)"`
	DiskLimitMode       string        `env:"DISK_LIMIT_MODE" envDefault:"warn" help:"when the storage driver cannot enforce resources.disk: warn (create, with a warning) or strict (fail)"`
	AllowExec           bool          `env:"ALLOW_EXEC" envDefault:"true" help:"let the server run processes in managed containers (exec); false refuses exec with forbidden, whatever the server asks"`
	AllowConsoleInput   bool          `env:"ALLOW_CONSOLE_INPUT" envDefault:"true" help:"let the server type into a managed container's main process (attach input, for containers created with openStdin); false makes attach read-only"`
	MaxSessions         int           `env:"MAX_SESSIONS" envDefault:"64" help:"exec, attach and followed stats sessions at once; beyond, new ones are refused with unavailable"`
	ContainerPidsLimit  int64         `env:"CONTAINER_PIDS_LIMIT" envDefault:"512" help:"maximum processes per container unless the command sets resources.pids"`
	ContainerLogMaxSize string        `env:"CONTAINER_LOG_MAX_SIZE" envDefault:"10m" help:"json-file log rotation: size of one container log file"`
	ContainerLogMaxFile int           `env:"CONTAINER_LOG_MAX_FILE" envDefault:"3" help:"json-file log rotation: number of container log files kept"`
	LogStreamBuffer     ByteSize      `env:"LOG_STREAM_BUFFER" envDefault:"8388608" help:"bytes of log lines a follow stream holds while the server reads slower than the container writes (or a size: 8m); beyond, the oldest are dropped and reported as a gap; all streams together hold at most 4 times this"`
	DockerTimeout       time.Duration `env:"DOCKER_TIMEOUT" envDefault:"30s" help:"timeout of each Docker API call (image pulls and log streams excepted)"`

	TLSCAFile             string `env:"TLS_CA_FILE" help:"PEM CA bundle trusted for wss:// and https:// in addition to the system roots"`
	TLSCertFile           string `env:"TLS_CERT_FILE" help:"client certificate (PEM) for mutual TLS; needs TLS_KEY_FILE"`
	TLSKeyFile            string `env:"TLS_KEY_FILE" help:"client key (PEM) for mutual TLS; needs TLS_CERT_FILE"`
	TLSInsecureSkipVerify bool   `env:"TLS_INSECURE_SKIP_VERIFY" envDefault:"false" help:"skip server certificate verification (testing only; warns at every dial)"`
	HealthAddr            string `env:"HEALTH_ADDR" envDefault:"127.0.0.1:9321" help:"listen address of /healthz, /readyz and /metrics: loopback (this host or container only) by default; :9321 for probes or scrapes from elsewhere (the Helm chart sets it); empty disables"`

	DockerHost      string `env:"DOCKER_HOST" shown:"unix:///var/run/docker.sock" help:"Docker daemon address (given to the Docker client)"`
	DockerTLSVerify string `env:"DOCKER_TLS_VERIFY" help:"verify the daemon's TLS certificate when DOCKER_HOST is tcp:// (given to the Docker client)"`
	DockerCertPath  string `env:"DOCKER_CERT_PATH" help:"directory with ca.pem, cert.pem, key.pem for the Docker daemon (given to the Docker client)"`
	HTTPSProxy      string `env:"HTTPS_PROXY" help:"HTTP CONNECT proxy for wss:// and https:// connections to the server (also https_proxy; HTTP_PROXY for ws://)"`
	NoProxy         string `env:"NO_PROXY" help:"comma-separated hosts reached without the proxy (also no_proxy)"`
	HostProc        string `env:"HOST_PROC" shown:"/proc" help:"host /proc for host metrics when the agent runs in a container, e.g. /host/proc (given to gopsutil)"`
	HostSys         string `env:"HOST_SYS" shown:"/sys" help:"host /sys, e.g. /host/sys (given to gopsutil)"`
	HostRoot        string `env:"HOST_ROOT" shown:"/" help:"host root file system, e.g. /host (given to gopsutil; also used to find Docker's data root for disk usage)"`

	dotEnvPath string           // the .env file read, "" when none (not a variable)
	proxy      httpproxy.Config // HTTP(S)_PROXY and NO_PROXY, upper or lower case
}

// DotEnvPath returns the absolute path of the .env file the configuration
// was read from, "" when there was none. The agent logs it (never its
// values) so a surprising setting can be traced to its file.
func (c *Config) DotEnvPath() string { return c.dotEnvPath }

// Proxy returns the proxy for a request to the server as net/http chooses
// one from the environment (HTTPS_PROXY for https and wss, HTTP_PROXY for
// http and ws, NO_PROXY exceptions, loopback never proxied; each also in
// lower case), from the variables as Load read them, .env included.
func (c *Config) Proxy() func(*http.Request) (*url.URL, error) {
	proxy := c.proxy.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
}

// Load reads the configuration from environ (os.Environ form) and from
// .env in the working directory, then validates it. On failure the error
// lists every problem, one per line (see Problems).
func Load(environ []string) (*Config, error) {
	return load(environ, DotEnvFile)
}

// Problems splits an error returned by Load into its lines, one per problem.
func Problems(err error) []string { return envconf.Lines(err) }

// Environment returns the variables as Load reads them, without
// validating them: environ (os.Environ form) over the settings of .env in
// the working directory. The error is a .env file that cannot be read or
// is not trusted (as Load refuses it), and the variables are then environ's
// alone; malformed lines are Load's to report. `lormas-agent doctor` checks
// Docker and the host metrics with it even when the configuration is
// invalid.
func Environment(environ []string) (map[string]string, error) {
	vars, _, err := environment(environ, DotEnvFile)
	if err != nil {
		return env.ToMap(environ), err
	}
	return vars, nil
}

// environment merges environ over the .env file at dotEnvPath: the real
// environment wins.
func environment(environ []string, dotEnvPath string) (map[string]string, dotEnv, error) {
	dot, err := readDotEnv(dotEnvPath)
	if err != nil {
		return nil, dot, err
	}
	vars := dot.vars
	for k, v := range env.ToMap(environ) {
		vars[k] = v
	}
	return vars, dot, nil
}

func load(environ []string, dotEnvPath string) (*Config, error) {
	vars, dot, err := environment(environ, dotEnvPath)
	if err != nil {
		// Alone: what the rest would say (a token missing, say) follows
		// from the file not being read and would only mislead.
		return nil, &envconf.Error{Problems: []string{err.Error()}}
	}
	var problems envconf.Problems
	for _, e := range dot.lines {
		problems.Line(e.Error())
	}
	cfg := envconf.Parse[Config](vars, &problems)
	// caarlos0/env applies envDefault to a variable set to "", but an empty
	// HEALTH_ADDR means "disabled".
	if v, set := vars["HEALTH_ADDR"]; set && strings.TrimSpace(v) == "" {
		cfg.HealthAddr = ""
	}
	cfg.dotEnvPath = dot.path
	cfg.proxy = proxyConfig(vars)
	cfg.normalize()
	cfg.validate(&problems)
	if err := problems.Err(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// proxyConfig reads the proxy variables as httpproxy.FromEnvironment does:
// upper case first, then lower case.
func proxyConfig(vars map[string]string) httpproxy.Config {
	get := func(names ...string) string {
		for _, n := range names {
			if v := vars[n]; v != "" {
				return v
			}
		}
		return ""
	}
	return httpproxy.Config{
		HTTPProxy:  get("HTTP_PROXY", "http_proxy"),
		HTTPSProxy: get("HTTPS_PROXY", "https_proxy"),
		NoProxy:    get("NO_PROXY", "no_proxy"),
	}
}

// normalize trims values and fills the defaults that are computed.
func (c *Config) normalize() {
	c.ServerURL = strings.TrimSpace(c.ServerURL)
	// A token pasted with a trailing newline (a Kubernetes Secret made with
	// echo) must still work in the Authorization header.
	c.NodeToken = secret.New(strings.TrimSpace(c.NodeToken.Reveal()))
	c.EnrollmentToken = secret.New(strings.TrimSpace(c.EnrollmentToken.Reveal()))
	c.NodeTokenFile = strings.TrimSpace(c.NodeTokenFile)
	c.EnrollmentTokenFile = strings.TrimSpace(c.EnrollmentTokenFile)
	c.NodeName = strings.TrimSpace(c.NodeName)
	c.NodeID = strings.TrimSpace(c.NodeID)
	c.DiskLimitMode = strings.ToLower(strings.TrimSpace(c.DiskLimitMode))
	c.ContainerLogMaxSize = strings.TrimSpace(c.ContainerLogMaxSize)
	c.HealthAddr = strings.TrimSpace(c.HealthAddr)
	roots := c.VolumeRoots[:0:0]
	for _, r := range c.VolumeRoots {
		if r = strings.TrimSpace(r); r != "" {
			roots = append(roots, r)
		}
	}
	c.VolumeRoots = roots
	if c.NodeName == "" {
		if h, err := os.Hostname(); err == nil {
			c.NodeName = h
		}
	}
}

// LookupEnv returns the value of one variable as Load would see it (the
// real environment, else .env in the working directory), without
// validating anything else: `lormas-agent healthcheck` needs HEALTH_ADDR
// even when the rest of the configuration is broken. ok is false when
// neither sets it. The error is a .env file that cannot be read or is not
// trusted (as Load refuses it); malformed lines elsewhere in it are not.
func LookupEnv(environ []string, key string) (value string, ok bool, err error) {
	return lookupEnv(environ, DotEnvFile, key)
}

func lookupEnv(environ []string, dotEnvPath, key string) (string, bool, error) {
	if v, ok := env.ToMap(environ)[key]; ok {
		return v, true, nil
	}
	dot, err := readDotEnv(dotEnvPath)
	if err != nil {
		return "", false, err
	}
	v, ok := dot.vars[key]
	return v, ok, nil
}
