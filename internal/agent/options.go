package agent

import (
	"context"
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
	LogStreamBuffer       int           // bytes per follow stream, default 8 MiB
	StatusEvents          bool          // container_event + inventory

	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSInsecureSkipVerify bool

	// Reauthenticate, when set, is called each time the server rejects the
	// token (HTTP 401/403 at the upgrade, or an auth close code), before the
	// next dial; an enrolled agent re-enrolls there, so an expired token or
	// a server that lost the node recovers without an operator. Its error
	// is logged; the dial is retried with backoff either way.
	Reauthenticate func(ctx context.Context) error

	Runtime  Runtime
	Host     HostSampler
	Observer Observer // nil: no metrics
	Logger   *slog.Logger
}
