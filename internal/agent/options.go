package agent

import (
	"log/slog"
	"time"
)

// Options configure an Agent. cmd/lormas-agent fills them from config.Config.
type Options struct {
	ServerURL string                 // SERVER_URL: ws://, wss://, http:// or https://
	Token     func() (string, error) // read before every dial (NODE_TOKEN_FILE rotation)
	NodeName  string
	NodeID    string // fallback when the token has no nodeId/sub/id claim
	Version   string // agent version for agent_identify and User-Agent

	HeartbeatInterval     time.Duration // default 10s
	ReconnectDelay        time.Duration // default 1s
	ReconnectMaxDelay     time.Duration // default 60s
	MaxReconnectAttempts  int           // 0 = forever
	MaxConcurrentCommands int           // default 32
	MaxMessageBytes       int           // default 1 MiB
	ShutdownTimeout       time.Duration // default 10s
	OutboxLimit           int           // default 1000
	StatusEvents          bool          // container_event + inventory

	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSInsecureSkipVerify bool

	Runtime  Runtime
	Host     HostSampler
	Observer Observer // nil: no metrics
	Logger   *slog.Logger
}
