// Package health serves the agent's operational endpoints on HEALTH_ADDR:
// /healthz (the process and its loops are running), /readyz (connected,
// identified, Docker reachable) and /metrics (Prometheus), and implements
// the `lormas-agent healthcheck` probe (Check) used by the image's
// HEALTHCHECK, which has no shell or curl.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Endpoint paths.
const (
	PathAlive   = "/healthz"
	PathReady   = "/readyz"
	PathMetrics = "/metrics"
)

// shutdownGrace bounds the wait for in-flight scrapes at shutdown.
const shutdownGrace = 5 * time.Second

// Options configure a Server.
type Options struct {
	// Alive and Ready report the agent's state: nil is healthy, an error
	// says why not. Nil functions always report healthy.
	Alive   func() error
	Ready   func() error
	Metrics *Metrics // nil: /metrics answers 404
	Logger  *slog.Logger
}

// Server serves the health endpoints.
type Server struct {
	opts    Options
	handler http.Handler
}

// NewServer builds the endpoints' handler.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+PathAlive, probe(opts.Alive))
	mux.Handle("GET "+PathReady, probe(opts.Ready))
	if opts.Metrics != nil {
		reg := opts.Metrics.Registry()
		mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			Registry:          reg,
			ErrorHandling:     promhttp.ContinueOnError,
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
			EnableOpenMetrics: true,
		}))
	}
	return &Server{opts: opts, handler: mux}
}

// Handler returns the endpoints' handler (GET and HEAD).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on ln until ctx ends, then shuts down gracefully (in-flight
// requests get a few seconds) and returns nil. It returns an error only if
// serving failed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("health server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health server: %w", err)
	}
	return nil
}

// probe answers 200 "ok" when check passes, else 503 with the reason.
func probe(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		var err error
		if check != nil {
			err = check()
		}
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ok: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}
