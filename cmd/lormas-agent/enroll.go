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
)

// enrollTimeout bounds one enrollment request.
const enrollTimeout = 30 * time.Second

// enrollNode enrolls the node with the enrollment token and stores the
// issued node token in STATE_DIR (0600; the directory 0700), from where
// this and every later start read it. A failed attempt is retried with the
// reconnect backoff until ctx ends; the enrollment token file is re-read
// each time, so it may appear after the agent started. It returns the
// enrollment's result; an error only when ctx ended or the token cannot be
// stored.
func enrollNode(ctx context.Context, cfg *config.Config, tlsConf *tls.Config, log *slog.Logger) (enroll.Result, error) {
	server, err := endpoint.Parse(cfg.ServerURL)
	if err != nil {
		return enroll.Result{}, err
	}
	hc := enrollClient(tlsConf)
	defer hc.CloseIdleConnections()

	bo := backoff.New(cfg.ReconnectDelay, cfg.ReconnectMaxDelay)
	limit := logging.Every(time.Minute)
	log.Info("enrolling node", "server", endpoint.Redact(cfg.ServerURL), "node", cfg.NodeName)
	for {
		res, err := enrollOnce(ctx, cfg, hc, server)
		if err == nil {
			if err := cfg.StoreToken(res.Token); err != nil {
				return enroll.Result{}, fmt.Errorf("enrolled as %q but cannot keep the node token: %w", res.Name, err)
			}
			log.Info("node enrolled", "node", res.Name, "nodeId", res.ID, "tokenStoredIn", cfg.StoredTokenPath())
			return res, nil
		}
		if ctx.Err() != nil {
			return enroll.Result{}, ctx.Err()
		}
		wait := bo.Next()
		level := slog.LevelWarn
		if errors.Is(err, enroll.ErrTokenRejected) {
			level = slog.LevelError // needs an operator: a new enrollment token
		}
		limit.Log(ctx, log, level, "enrollment failed; retrying", "err", err, "attempt", bo.Attempt(), "retryIn", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return enroll.Result{}, ctx.Err()
		}
	}
}

// reenroller returns the agent's Reauthenticate hook for an enrolled node:
// one enrollment attempt under NODE_NAME whose token replaces the stored one.
// The server re-issues the token of an existing node by name, so a token
// that expired (NODE_TOKEN_TTL) or was rotated is replaced for the same
// node; a node deleted on the server is enrolled anew.
func reenroller(cfg *config.Config, tlsConf *tls.Config, log *slog.Logger) func(context.Context) error {
	server, err := endpoint.Parse(cfg.ServerURL)
	if err != nil {
		return nil // config.Load validated SERVER_URL already
	}
	hc := enrollClient(tlsConf)
	return func(ctx context.Context) error {
		res, err := enrollOnce(ctx, cfg, hc, server)
		if err != nil {
			return fmt.Errorf("re-enroll: %w", err)
		}
		if err := cfg.StoreToken(res.Token); err != nil {
			return fmt.Errorf("re-enrolled as %q but cannot keep the node token: %w", res.Name, err)
		}
		log.Info("node re-enrolled after the server rejected its token", "node", res.Name, "nodeId", res.ID)
		return nil
	}
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

func enrollOnce(ctx context.Context, cfg *config.Config, hc *http.Client, server *url.URL) (enroll.Result, error) {
	tok, err := cfg.EnrollmentTokenValue()
	if err != nil {
		return enroll.Result{}, err
	}
	return enroll.Enroll(ctx, hc, server, tok, cfg.NodeName)
}
