package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/lormas/lormas-agent/internal/transport"
)

// Options configure an Agent. cmd/lormas-agent fills them from config.Config.
type Options struct {
	ServerURL string                 // SERVER_URL: ws://, wss://, http:// or https://
	Token     func() (string, error) // read before every dial (NODE_TOKEN_FILE rotation)
	NodeName  string
	// NodeID is the node id the agent runs as: heartbeats carry it and the
	// container engine labels containers with it (cmd/lormas-agent builds
	// both from nodetoken.Identity of the same token). "" derives it from
	// the first token (claims nodeId, sub, id), else NodeName. It never
	// changes while the agent runs: a later token that names another node
	// is not used (the agent logs why and keeps waiting for a token of its
	// own node), since containers labelled with one id would otherwise be
	// refused or mislabelled.
	NodeID  string
	Version string // agent version for agent_identify and User-Agent

	// TokenHeaderOnly sends the node token only in the Authorization
	// header, not also as ?token= (NODE_TOKEN_IN_QUERY=false).
	TokenHeaderOnly bool

	HeartbeatInterval     time.Duration // default 10s
	ReconnectDelay        time.Duration // default 1s
	ReconnectMaxDelay     time.Duration // default 60s
	MaxReconnectAttempts  int           // 0 = forever
	MaxConcurrentCommands int           // default 32
	MaxMessageBytes       int           // default 1 MiB
	ShutdownTimeout       time.Duration // default 10s
	OutboxLimit           int           // default 1000
	MaxPendingBytes       int64         // default 64 MiB: commands accepted and not finished; a quarter per container
	MaxSessions           int           // exec/attach/stats sessions at once; default 64
	LogStreamBuffer       int           // bytes per follow stream, default 8 MiB
	ResultStoreBytes      int64         // results kept to answer repeated command ids, default 16 MiB
	StatusEvents          bool          // container_event + inventory

	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSInsecureSkipVerify bool
	// Proxy chooses the proxy of each dial (HTTPS_PROXY, HTTP_PROXY,
	// NO_PROXY as configured, .env included); nil reads the process
	// environment (transport.ProxyFromEnvironment).
	Proxy transport.ProxyFunc

	// RenewExpired, when set, is called when the server refuses a token
	// that has EXPIRED (its exp is past by the agent's clock, or the server
	// closed the session with 4001 "token expired"), before the next dial;
	// an enrolled agent renews its node's token there by proving its key.
	// It is NOT called for a token that was rotated or revoked, or whose
	// node was deleted: what an administrator did sticks, and the agent
	// waits for a new credential (docs/protocol.md). Its error is logged; the dial is
	// retried with backoff either way.
	RenewExpired func(ctx context.Context, expired string) error

	// RefreshedTokens, when set, keeps the tokens the server hands over in
	// token_refresh, apart from the node's credential (cmd/lormas-agent:
	// STATE_DIR/node-token.refreshed, 0600); the agent then announces the
	// token_refresh capability. A token is kept only when it names this
	// node with plausible times (nodetoken.CheckRefreshed); the agent
	// dials with it while nodetoken.Prefer chooses it over what Token
	// returns, reports a dial the server accepted (Accepted) and forgets it
	// when the server refuses it (Discard), falling back to Token. The
	// newest one is also kept in memory, so a failed write costs nothing
	// until restart. Errors are logged, never the token.
	RefreshedTokens RefreshedTokenStore

	// CredentialHint tells the operator, in the log line of a refused
	// token, where a new credential goes (e.g. "write the node's new token
	// into NODE_TOKEN_FILE=/etc/lormas/token").
	CredentialHint string

	Runtime  Runtime
	Host     HostSampler
	Observer Observer // nil: no metrics
	Logger   *slog.Logger
}
