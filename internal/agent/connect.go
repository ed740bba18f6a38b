package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/transport"
)

// connectLoop dials, runs a session, and redials with backoff until ctx
// ends (nil) or the reconnect attempts are exhausted.
func (a *Agent) connectLoop(ctx context.Context) error {
	b := backoff.New(a.opts.ReconnectDelay, a.opts.ReconnectMaxDelay, backoff.WithStableAfter(a.tm.stableAfter))
	authStreak := false
	for first := true; ; first = false {
		if ctx.Err() != nil {
			return nil
		}
		if !first {
			if limit := a.opts.MaxReconnectAttempts; limit > 0 && b.Attempt() >= limit {
				a.log.Error("giving up: maximum reconnect attempts reached", "attempts", limit)
				return fmt.Errorf("%w (%d)", ErrMaxReconnects, limit)
			}
			d := b.Next()
			a.log.Info("reconnecting", "in", d.Round(time.Millisecond), "attempt", b.Attempt())
			if !sleep(ctx, d) {
				return nil
			}
			a.obs.Reconnect()
		}

		r := a.connectOnce(ctx, b)
		if ctx.Err() != nil {
			return nil
		}
		if r.tokenChanged {
			authStreak = false
		}
		var ae *transport.AuthError
		switch {
		case errors.As(r.err, &ae):
			if !authStreak {
				a.log.Error("server rejected the node token", "reason", authReason(ae),
					"hint", "check NODE_TOKEN or NODE_TOKEN_FILE; retrying with backoff, the token is re-read before every dial")
				authStreak = true
			} else {
				a.log.Debug("server rejected the node token again", "reason", authReason(ae))
			}
			if a.opts.Reauthenticate != nil {
				if err := a.opts.Reauthenticate(ctx); err != nil && ctx.Err() == nil {
					a.log.Warn("could not obtain a new node token", "err", err)
				}
			}
		case r.connected:
			authStreak = false
			a.log.Warn("disconnected", "err", r.err, "up", r.up.Round(time.Millisecond))
		default:
			authStreak = false
			a.log.Warn("connection failed", "err", r.err)
		}
	}
}

// attempt is the outcome of one dial.
type attempt struct {
	err          error         // why it failed or ended
	connected    bool          // the upgrade succeeded
	up           time.Duration // how long the connection lasted
	tokenChanged bool          // the token differs from the previous dial's
}

func authReason(e *transport.AuthError) string {
	if e.Status != 0 {
		return fmt.Sprintf("HTTP %d %s at the WebSocket upgrade", e.Status, e.Reason)
	}
	if e.Reason != "" {
		return fmt.Sprintf("closed with code %d: %s", e.CloseCode, e.Reason)
	}
	return fmt.Sprintf("closed with code %d", e.CloseCode)
}

// connectOnce reads the token, dials and runs one session to its end.
func (a *Agent) connectOnce(ctx context.Context, b *backoff.Backoff) attempt {
	token, err := a.opts.Token()
	if err != nil {
		return attempt{err: fmt.Errorf("read node token: %w", err)}
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return attempt{err: errors.New("read node token: the token is empty")}
	}
	changed := a.setToken(token)

	tlsCfg, err := tlsTemplate(&a.opts)
	if err != nil {
		return attempt{err: fmt.Errorf("TLS configuration: %w", err), tokenChanged: changed}
	}
	if a.opts.TLSInsecureSkipVerify {
		a.log.Warn("TLS certificate verification is disabled (TLS_INSECURE_SKIP_VERIFY=true): the server is not authenticated")
	}
	a.log.Debug("dialing", "url", endpoint.Redact(transport.SocketURL(a.server, token, !a.opts.TokenHeaderOnly)))
	conn, err := transport.Dial(ctx, transport.Config{
		Server:          a.server,
		Token:           token,
		TokenHeaderOnly: a.opts.TokenHeaderOnly,
		Version:         a.opts.Version,
		TLS:             tlsCfg,
		Proxy:           a.tm.proxy,
		MaxMessageBytes: a.opts.MaxMessageBytes,
		PingInterval:    a.tm.pingInterval,
		ReadTimeout:     a.tm.readTimeout,
		WriteTimeout:    a.tm.writeTimeout,
		Logger:          a.opts.Logger.With("component", "transport"),
	})
	if err != nil {
		return attempt{err: err, tokenChanged: changed}
	}
	start := time.Now()
	b.MarkConnected(start)
	err = a.runSession(ctx, conn)
	end := time.Now()
	if b.MarkDisconnected(end) {
		a.log.Debug("connection was stable: backoff reset")
	}
	return attempt{err: err, connected: true, up: end.Sub(start), tokenChanged: changed}
}

// setToken records the token of this dial and re-derives the node id when
// it changed; it reports whether it changed (not on the first dial).
func (a *Agent) setToken(token string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if token == a.token {
		return false
	}
	first := a.token == ""
	a.token = token
	a.nodeID = deriveNodeID(token, a.opts.NodeID, a.opts.NodeName)
	if !first {
		a.log.Info("node token changed", "nodeId", a.nodeID)
	}
	return !first
}
