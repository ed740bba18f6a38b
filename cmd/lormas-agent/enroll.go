package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/config"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/nodetoken"
)

// enrollTimeout bounds one enrollment request.
const enrollTimeout = 30 * time.Second

// enrollNode enrolls the node with the enrollment token and stores the
// issued node token in STATE_DIR (0600; the directory 0700), from where
// this and every later start read it. The node's key is made first (or the
// one in STATE_DIR reused): its signature proves the node's identity, so
// the server can re-issue this node's token later, and to nobody else.
//
// Enrollment creates a NEW node; for a name that exists already the server
// answers 409 unless this agent's key is that node's (a node whose token
// was lost but whose key survived gets its token re-issued). A failed
// attempt is retried with the reconnect backoff until ctx ends; the
// enrollment token file is re-read each time, so it may appear after the
// agent started. It returns the enrollment's result; an error only when
// ctx ended or the key or token cannot be stored.
func enrollNode(ctx context.Context, cfg *config.Config, tlsConf *tls.Config, log *slog.Logger) (enroll.Result, error) {
	server, err := endpoint.Parse(cfg.ServerURL)
	if err != nil {
		return enroll.Result{}, err
	}
	key, created, err := enroll.LoadOrCreateKey(cfg.StateDir)
	if err != nil {
		return enroll.Result{}, fmt.Errorf("node key in STATE_DIR: %w", err)
	}
	if created {
		log.Info("node key created", "file", enroll.KeyPath(cfg.StateDir))
	}
	hc := enrollClient(tlsConf)
	defer hc.CloseIdleConnections()

	bo := backoff.New(cfg.ReconnectDelay, cfg.ReconnectMaxDelay)
	limit := logging.Every(time.Minute)
	log.Info("enrolling node", "server", endpoint.Redact(cfg.ServerURL), "node", cfg.NodeName)
	for {
		res, err := enrollOnce(ctx, cfg, hc, server, enroll.Request{Name: cfg.NodeName, Key: key})
		if err == nil {
			if err := cfg.StoreToken(res.Token); err != nil {
				return enroll.Result{}, fmt.Errorf("enrolled as %q but cannot keep the node token: %w", res.Name, err)
			}
			log.Info("node enrolled", "node", res.Name, "nodeId", res.ID, "reissued", res.Reissued,
				"tokenStoredIn", cfg.StoredTokenPath())
			return res, nil
		}
		if ctx.Err() != nil {
			return enroll.Result{}, ctx.Err()
		}
		wait := bo.Next()
		level := slog.LevelWarn
		args := []any{"err", err, "attempt", bo.Attempt(), "retryIn", wait}
		var se *enroll.StatusError
		switch {
		case errors.Is(err, enroll.ErrTokenRejected):
			level = slog.LevelError // needs an operator: a new enrollment token
		case errors.As(err, &se) && se.Conflict():
			level = slog.LevelError // needs an operator: the name is taken
			args = append(args, "hint", "enrollment creates new nodes: choose another NODE_NAME, or have an administrator delete the existing node; an agent that has the node's token needs no enrollment (NODE_TOKEN_FILE)")
		case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
			level = slog.LevelError // needs an operator: SERVER_URL is wrong
			args = append(args, "hint", endpoint.NotFoundHint(server, endpoint.HTTPURL(server, enroll.Path)))
		}
		limit.Log(ctx, log, level, "enrollment failed; retrying", args...)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return enroll.Result{}, ctx.Err()
		}
	}
}

// renewer returns the agent's RenewExpired hook for an enrolled node: one
// renewal of the node's EXPIRED token, proved by the node's key and the
// expired token itself, whose result replaces the stored token. The server
// refuses it for a node an administrator deleted (it never creates a node)
// or whose token was rotated, and while the node is connected, so no
// administrator action is undone and no agent is knocked off.
//
// The server renews only from the node's current or previous token. An
// agent handed several tokens over one long session (token_refresh) never
// dialled with them, so its stored token may be older than both; the
// newest refreshed token (STATE_DIR/node-token.refreshed) is therefore
// tried first when it is plausible and newer, then the expired one. A
// refreshed token the server does not know (planted) only costs that
// attempt; it is removed once a renewal succeeded.
func renewer(cfg *config.Config, tlsConf *tls.Config, log *slog.Logger) func(context.Context, string) error {
	server, err := endpoint.Parse(cfg.ServerURL)
	if err != nil {
		return nil // config.Load validated SERVER_URL already
	}
	hc := enrollClient(tlsConf)
	refreshed := cfg.RefreshedTokens()
	return func(ctx context.Context, expired string) error {
		nodeID := nodetoken.NodeID(expired)
		if nodeID == "" {
			return errors.New("renew: the expired token names no node")
		}
		key, err := enroll.LoadKey(cfg.StateDir)
		if err != nil {
			return fmt.Errorf("renew: %w (an agent enrolled without a key cannot renew its token; write a new token into %s)", err, cfg.StoredTokenPath())
		}
		tokens := []string{expired}
		if r, err := refreshed.Load(); err == nil && renewsBetter(r, expired, nodeID, time.Now()) {
			tokens = []string{r, expired}
		}
		var first error
		for _, tok := range tokens {
			res, err := enrollOnce(ctx, cfg, hc, server, enroll.Request{Name: cfg.NodeName, Key: key, NodeID: nodeID, Token: tok})
			if err != nil {
				var se *enroll.StatusError
				if first == nil {
					first = err
				}
				if errors.As(err, &se) && !se.Temporary() && !errors.Is(err, enroll.ErrTokenRejected) && ctx.Err() == nil {
					continue // this token refused: try the next one
				}
				break
			}
			if err := cfg.StoreToken(res.Token); err != nil {
				return fmt.Errorf("renewed the token of node %q but cannot keep it: %w", res.ID, err)
			}
			// The renewed token is newer than any refreshed one.
			if err := refreshed.Discard(); err != nil {
				log.Warn("could not remove the refreshed token", "err", err)
			}
			log.Info("expired node token renewed", "node", res.Name, "nodeId", res.ID, "expiresAt", res.ExpiresAt)
			return nil
		}
		return fmt.Errorf("renew: %w", first)
	}
}

// renewsBetter reports whether r, a token from token_refresh, should be
// presented for renewal before expired: plausible for nodeID and issued
// later (it may have expired too).
func renewsBetter(r, expired, nodeID string, now time.Time) bool {
	if r == "" || r == expired {
		return false
	}
	rc, ok := nodetoken.Parse(r)
	if !ok || rc.CheckRefreshed(nodeID, now) != nil {
		return false
	}
	ec, ok := nodetoken.Parse(expired)
	return !ok || rc.IssuedAt.After(ec.IssuedAt)
}

func enrollClient(tlsConf *tls.Config) *http.Client {
	return &http.Client{
		Timeout: enrollTimeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsConf.Clone(),
			TLSHandshakeTimeout: 10 * time.Second,
		},
	}
}

func enrollOnce(ctx context.Context, cfg *config.Config, hc *http.Client, server *url.URL, req enroll.Request) (enroll.Result, error) {
	tok, err := cfg.EnrollmentTokenValue()
	if err != nil {
		return enroll.Result{}, err
	}
	return enroll.Enroll(ctx, hc, server, tok, req)
}
