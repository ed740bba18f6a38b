// Package transport is the agent's WebSocket client: it dials the server with
// gws (TLS, client certificates, HTTP CONNECT proxies, auth headers), keeps
// the connection alive with pings and a read deadline, and carries frames.
// It knows nothing about the messages inside them.
//
// A Conn has exactly two goroutines: gws's read loop, which copies each frame
// and hands it to Frames without ever running agent code, and one writer fed
// by a bounded queue, which gives producers backpressure when the server
// reads slowly, plus a small priority lane so pongs are never stuck behind
// bulk traffic.
//
// Its pings carry the position of the last frame written, so the server's
// pong proves what it has read (Acked, ack.go): the agent counts a result
// as delivered only then.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/net/http/httpproxy"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// Defaults of Config (docs/protocol.md).
const (
	DefaultDialTimeout      = 10 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxMessageBytes  = 1 << 20
	DefaultPingInterval     = 20 * time.Second
	DefaultReadTimeout      = 60 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultCloseTimeout     = 2 * time.Second
	DefaultSendQueue        = 64
)

// Config describes one dial.
type Config struct {
	Server  *url.URL // parsed SERVER_URL (endpoint.Parse): ws or wss
	Token   string   // node token: Authorization header, and ?token= unless TokenHeaderOnly
	Version string   // agent version for the User-Agent header

	// TokenHeaderOnly sends the token only in "Authorization: Bearer"
	// (NODE_TOKEN_IN_QUERY=false), never in the URL, which proxies and
	// load balancers log. The zero value also sends ?token=, as the seed
	// does, for servers that read only the query parameter.
	TokenHeaderOnly bool

	// Probe marks the upgrade as a check of the token (protocol.ProbeHeader),
	// for `lormas-agent doctor`: a server that knows it closes the
	// connection at once instead of replacing the node's running session.
	Probe bool

	TLS   *tls.Config // template for wss (cloned per dial); nil = system roots
	Proxy ProxyFunc   // nil = ProxyFromEnvironment; Direct for none

	DialTimeout      time.Duration // TCP connect (and proxy CONNECT)
	HandshakeTimeout time.Duration // TLS + HTTP upgrade
	MaxMessageBytes  int           // largest frame read or written
	PingInterval     time.Duration // WebSocket ping period
	ReadTimeout      time.Duration // nothing read for this long: connection dead
	WriteTimeout     time.Duration // one frame write
	CloseTimeout     time.Duration // writing the close frame in Close
	SendQueue        int           // frames waiting for the writer

	Logger *slog.Logger
}

// Direct is a ProxyFunc that never uses a proxy.
func Direct(*http.Request) (*url.URL, error) { return nil, nil }

// ProxyFromEnvironment is the default ProxyFunc: HTTPS_PROXY for wss,
// HTTP_PROXY for ws, NO_PROXY exceptions, loopback never proxied, as
// net/http does; unlike http.ProxyFromEnvironment it reads the environment
// at every dial instead of once per process.
func ProxyFromEnvironment(r *http.Request) (*url.URL, error) {
	return httpproxy.FromEnvironment().ProxyFunc()(r.URL)
}

// UserAgent is the User-Agent the agent sends: Lormas-Node-Agent/<version>.
func UserAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return "Lormas-Node-Agent/" + version
}

func (cfg Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, DefaultDialTimeout)
	def(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&cfg.PingInterval, DefaultPingInterval)
	def(&cfg.ReadTimeout, DefaultReadTimeout)
	def(&cfg.WriteTimeout, DefaultWriteTimeout)
	def(&cfg.CloseTimeout, DefaultCloseTimeout)
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = DefaultSendQueue
	}
	if cfg.Proxy == nil {
		cfg.Proxy = ProxyFromEnvironment
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Dial connects to the server's node socket and performs the WebSocket
// upgrade. A 401/403 answer is an *AuthError (errors.Is(err, ErrAuth)). ctx
// bounds the dial and the handshake; the returned Conn outlives it.
//
// Errors and logs never contain the token.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	if cfg.Server == nil {
		return nil, errors.New("dial: no server URL")
	}
	addr := SocketURL(cfg.Server, cfg.Token, !cfg.TokenHeaderOnly)
	shown := endpoint.Redact(addr)
	secure := cfg.Server.Scheme == "wss"

	header := http.Header{}
	header.Set("Authorization", "Bearer "+cfg.Token)
	header.Set("User-Agent", UserAgent(cfg.Version))
	if cfg.Probe {
		header.Set(protocol.ProbeHeader, "1")
	}

	var tlsCfg *tls.Config
	if secure {
		// gws writes ServerName into the config it is given: a fresh clone
		// per dial keeps the template untouched.
		tlsCfg = cfg.TLS.Clone()
		if tlsCfg == nil {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}

	d := &dialer{ctx: ctx, timeout: cfg.DialTimeout, proxy: cfg.Proxy, secure: secure, tls: cfg.TLS}
	track := &trackingDialer{d: d}
	// NewClient takes no context: close the socket if ctx ends mid-handshake.
	stop := context.AfterFunc(ctx, track.abort)

	c := newConn(cfg)
	socket, resp, err := gws.NewClient(handler{c}, &gws.ClientOption{
		Addr:                addr,
		RequestHeader:       header,
		HandshakeTimeout:    cfg.HandshakeTimeout,
		TlsConfig:           tlsCfg,
		NewDialer:           func() (gws.Dialer, error) { return track, nil },
		ReadMaxPayloadSize:  cfg.MaxMessageBytes,
		WriteMaxPayloadSize: cfg.MaxMessageBytes,
		Recovery:            gws.Recovery,
		Logger:              gwsLogger{cfg.Logger},
	})
	c.peer = track.peer
	if !stop() {
		if socket != nil {
			_ = socket.NetConn().Close()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			switch resp.StatusCode {
			case http.StatusUnauthorized, http.StatusForbidden:
				return nil, &AuthError{Status: resp.StatusCode, Reason: http.StatusText(resp.StatusCode)}
			}
			return nil, &UpgradeError{Status: resp.StatusCode, URL: shown}
		}
		return nil, fmt.Errorf("dial %s: %w", shown, redact(err, cfg.Token))
	}
	c.start(socket)
	return c, nil
}

// SocketURL is the node socket's URL on server: with inQuery, the token is
// its ?token= parameter (the seed's form); without, the URL carries no
// credential. Log it through endpoint.Redact.
func SocketURL(server *url.URL, token string, inQuery bool) string {
	if inQuery {
		return endpoint.NodeSocketURL(server, token)
	}
	u := *server
	u.Path += endpoint.NodeSocketPath
	u.RawQuery = ""
	return u.String()
}

// trackingDialer remembers the connection it made so a cancelled context
// can close it while gws is still handshaking.
type trackingDialer struct {
	d       *dialer
	mu      sync.Mutex
	conn    net.Conn
	peer    *peerConn // what gws got: conn, keeping the server's close code (conn.go)
	aborted bool
}

func (t *trackingDialer) Dial(network, addr string) (net.Conn, error) {
	conn, err := t.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		_ = conn.Close()
		return nil, context.Canceled
	}
	t.conn = conn
	t.peer = &peerConn{Conn: conn}
	return t.peer, nil
}

func (t *trackingDialer) abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.aborted = true
	if t.conn != nil {
		_ = t.conn.Close()
	}
}

// gwsLogger routes gws's own error logs (recovered panics) to slog.
type gwsLogger struct{ l *slog.Logger }

func (g gwsLogger) Error(v ...any) {
	g.l.Error("websocket library error", "detail", fmt.Sprint(v...))
}
