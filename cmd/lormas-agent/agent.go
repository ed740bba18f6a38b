package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/backoff"
	"github.com/lormas/lormas-agent/internal/config"
	"github.com/lormas/lormas-agent/internal/docker"
	"github.com/lormas/lormas-agent/internal/doctor"
	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/enroll"
	"github.com/lormas/lormas-agent/internal/health"
	"github.com/lormas/lormas-agent/internal/hostmetrics"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/nodetoken"
	"github.com/lormas/lormas-agent/internal/transport"
)

// The Docker layer implements the agent's runtime contract; the assertion
// lives here so internal/docker never imports internal/agent.
var _ agent.Runtime = (*docker.Engine)(nil)
var _ agent.EventWatcher = (*docker.Engine)(nil)

var (
	_ agent.HostSampler = (*hostmetrics.Sampler)(nil)
	_ agent.Observer    = (*health.Metrics)(nil)
)

// errNotStarted is /readyz's answer until the agent exists.
var errNotStarted = errors.New("agent starting")

// runAgent loads the configuration, enrolls when needed, and runs the agent
// until ctx ends (graceful shutdown, status 0) or the reconnect attempts are
// exhausted (status 1). Invalid configuration is status 2.
func runAgent(ctx context.Context, args, environ []string, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "lormas-agent run: unexpected arguments %q\n", args)
		return exitUsage
	}
	cfg, err := config.Load(environ)
	if err != nil {
		printProblems(stderr, config.Problems(err))
		return exitUsage
	}
	// TLS files are checked by building the configuration once: a CA file
	// without certificates or a key that does not match is a configuration
	// problem, not a dial failure to retry forever.
	tlsConf, err := transport.TLSConfig(cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSInsecureSkipVerify)
	if err != nil {
		printProblems(stderr, []string{"TLS: " + err.Error()})
		return exitUsage
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil { // validated by config.Load already
		printProblems(stderr, []string{err.Error()})
		return exitUsage
	}
	log.Info("lormas-agent starting",
		"version", version, "commit", commit,
		"server", endpoint.Redact(cfg.ServerURL), "node", cfg.NodeName,
		"healthAddr", cfg.HealthAddr)
	if p := cfg.DotEnvPath(); p != "" {
		// The path only: the file usually holds the node token.
		log.Info("configuration read from file", "path", p)
	}
	if cfg.TLSInsecureSkipVerify {
		log.Warn("TLS_INSECURE_SKIP_VERIFY is on: the server's certificate is not verified")
	}
	if u, err := endpoint.Parse(cfg.ServerURL); err == nil {
		if suffix, fixed, ok := endpoint.APISuffix(u); ok {
			log.Warn("SERVER_URL ends in "+suffix+": the agent appends "+endpoint.NodeSocketPath+" itself",
				"dials", endpoint.Redact(transport.SocketURL(u, "", false)), "hint", "unless the server really lives under that path, set SERVER_URL="+fixed)
		}
	}
	if err := start(ctx, cfg, tlsConf, log); err != nil {
		if errors.Is(err, agent.ErrMaxReconnects) {
			log.Error("giving up: MAX_RECONNECT_ATTEMPTS exhausted", "err", err, "attempts", cfg.MaxReconnectAttempts)
		} else {
			log.Error("lormas-agent failed", "err", err)
		}
		return exitFailure
	}
	log.Info("lormas-agent stopped")
	return exitOK
}

// start builds the pieces and runs them; nil after a graceful shutdown.
func start(ctx context.Context, cfg *config.Config, tlsConf *tls.Config, log *slog.Logger) error {
	metrics := health.NewMetrics(version, commit)
	var current atomic.Pointer[agent.Agent]

	// The health endpoint outlives ctx: it keeps answering (and being
	// scraped) while the agent drains in-flight commands at shutdown, and
	// stops when start returns.
	healthCtx, stopHealth := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopHealth()
	// Nothing Docker does holds up connecting to the server: what the agent
	// asks the daemon at start is asked in the background, until start
	// returns.
	dockerCtx, stopDocker := context.WithCancel(ctx)
	var dockerWG sync.WaitGroup
	defer dockerWG.Wait()
	defer stopDocker()
	dockerWG.Go(func() { checkDockerSocket(dockerCtx, dockerDaemon(cfg), log) })
	if cfg.HealthAddr != "" {
		ln, err := net.Listen("tcp", cfg.HealthAddr)
		if err != nil {
			return fmt.Errorf("health endpoint (HEALTH_ADDR): %w", err)
		}
		srv := health.NewServer(health.Options{
			Alive: func() error {
				if a := current.Load(); a != nil {
					return a.Alive()
				}
				return nil // enrolling or starting: alive
			},
			Ready: func() error {
				if a := current.Load(); a != nil {
					return a.Ready()
				}
				return errNotStarted
			},
			Metrics: metrics,
			Logger:  log.With("component", "health"),
		})
		wg.Go(func() {
			if err := srv.Serve(healthCtx, ln); err != nil {
				log.Error("health endpoint failed", "err", err)
			}
		})
		log.Info("health endpoint listening", "addr", ln.Addr().String())
	}

	creds := cfg.Credentials()
	enroller, err := enroll.NewEnroller(enroll.Options{
		ServerURL: cfg.ServerURL, NodeName: cfg.NodeName, Credentials: creds,
		TLS: tlsConf, Proxy: cfg.Proxy(), RetryDelay: cfg.ReconnectDelay, RetryMaxDelay: cfg.ReconnectMaxDelay,
		Logger: log.With("component", "enroll"),
	})
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer enroller.Close()
	if creds.NeedsEnrollment() {
		if _, err := enroller.Enroll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while enrolling
			}
			return err
		}
	}
	token, err := creds.Token()
	if err != nil {
		return fmt.Errorf("node token: %w", err)
	}
	// One identity for the whole run, from one parse of the token the
	// agent starts with (after enrollment, the enrolled node's): heartbeats
	// carry it and the engine labels containers lormas.node with it. The
	// agent refuses later tokens of another node, so the two never differ.
	nodeID := nodetoken.Identity(token, cfg.NodeID, cfg.NodeName)
	log.Info("node identity", "nodeId", nodeID)

	engine, err := docker.New(docker.Options{
		Daemon:         dockerDaemon(cfg),
		NodeID:         nodeID,
		VolumeRoots:    cfg.VolumeRoots,
		StateDir:       cfg.StateDir,
		AllowUnmanaged: cfg.AllowUnmanaged,
		DiskLimitMode:  cfg.DiskLimitMode,
		PidsLimit:      cfg.ContainerPidsLimit,
		LogMaxSize:     cfg.ContainerLogMaxSize,
		LogMaxFile:     cfg.ContainerLogMaxFile,
		CallTimeout:    cfg.DockerTimeout,
		Logger:         log,
		// Node-local console switches: nothing from the server changes them.
		DenyExec:         !cfg.AllowExec,
		DenyConsoleInput: !cfg.AllowConsoleInput,
	})
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer engine.Close()
	host := hostmetrics.New(hostmetrics.Options{ProcPath: cfg.HostProc, SysPath: cfg.HostSys, RootPath: cfg.HostRoot})
	// Ends before the engine is closed (deferred calls run last first).
	defer dockerWG.Wait()
	defer stopDocker()
	dockerWG.Go(func() { engine.CheckRoots(dockerCtx) })
	dockerWG.Go(func() { learnDockerRoot(dockerCtx, engine, host, log) })

	// Only an enrolled agent renews an EXPIRED token by itself (with its
	// key); a rotated or revoked token, or a deleted node, waits for the
	// operator (docs/protocol.md).
	var renew func(context.Context, string) error
	if creds.Enrolls() {
		renew = enroller.Renew
	}
	a, err := agent.New(agent.Options{
		ServerURL:             cfg.ServerURL,
		Token:                 creds.Token,
		TokenHeaderOnly:       !cfg.NodeTokenInQuery,
		NodeName:              cfg.NodeName,
		NodeID:                nodeID,
		Version:               version,
		HeartbeatInterval:     cfg.HeartbeatInterval,
		ReconnectDelay:        cfg.ReconnectDelay,
		ReconnectMaxDelay:     cfg.ReconnectMaxDelay,
		MaxReconnectAttempts:  cfg.MaxReconnectAttempts,
		MaxConcurrentCommands: cfg.MaxConcurrentCommands,
		MaxMessageBytes:       int(cfg.MaxMessageBytes),
		ShutdownTimeout:       cfg.ShutdownTimeout,
		OutboxLimit:           cfg.OutboxLimit,
		MaxPendingBytes:       int64(cfg.MaxPendingBytes),
		ResultStoreBytes:      int64(cfg.ResultStoreBytes),
		MaxSessions:           cfg.MaxSessions,
		LogStreamBuffer:       int(cfg.LogStreamBuffer),
		StatusEvents:          cfg.StatusEvents,
		TLSCAFile:             cfg.TLSCAFile,
		TLSCertFile:           cfg.TLSCertFile,
		TLSKeyFile:            cfg.TLSKeyFile,
		TLSInsecureSkipVerify: cfg.TLSInsecureSkipVerify,
		Proxy:                 cfg.Proxy(),
		RenewExpired:          renew,
		RefreshedTokens:       creds.Refreshed(),
		CredentialHint:        creds.Hint(),
		Runtime:               engine,
		Host:                  host,
		Observer:              metrics,
		Logger:                log,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// Keep the heap near what the agent's byte bounds allow (docs/security.md).
		debug.SetMemoryLimit(a.MemoryLimit())
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// The agent's own work per command is small and sequential (decode,
		// one Docker call, encode); with a second P the runtime wakes
		// another thread at every goroutine hand-off, which then spins
		// and finds nothing, on a host whose CPUs belong to the workloads.
		// One P measured lower latency and CPU per command (README,
		// Performance); GOMAXPROCS raises it (e.g. many log floods at once).
		runtime.GOMAXPROCS(1)
	}
	current.Store(a)
	return a.Run(ctx)
}

// learnDockerRoot asks the daemon, through the engine, for its data root,
// whose file system's usage heartbeats report, until it answers or ctx
// ends; until then they report the default root's.
func learnDockerRoot(ctx context.Context, engine *docker.Engine, host *hostmetrics.Sampler, log *slog.Logger) {
	retry := backoff.New(time.Second, time.Minute)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		dir, err := engine.DataRoot(actx)
		cancel()
		if err == nil {
			host.SetDockerRoot(dir)
			log.Debug("docker data root known", "dir", dir)
			return
		}
		if retry.Attempt() == 0 {
			log.Debug("docker data root unknown yet; disk usage of the default root", "err", err)
		}
		if retry.Wait(ctx) != nil {
			return
		}
	}
}

// dockerDaemon is the Docker daemon the configuration names.
func dockerDaemon(cfg *config.Config) docker.Daemon {
	return docker.Daemon{Host: cfg.DockerHost, TLSVerify: cfg.DockerTLSVerify, CertPath: cfg.DockerCertPath}
}

// checkDockerSocket tells the operator at start, with doctor's fix, when
// the Docker socket refuses this process (the agent's user lacks the
// socket's group). The agent runs on: Docker may come up later, and the
// server learns of the failure from every command's result. It may wait on
// the daemon: the agent runs it in the background.
func checkDockerSocket(ctx context.Context, daemon docker.Daemon, log *slog.Logger) {
	r := doctor.CheckDockerSocket(ctx, daemon.HostOrDefault(), 5*time.Second)
	if r.Status != doctor.Fail {
		return
	}
	log.Error("Docker socket not usable: commands will fail until this is fixed", "detail", r.Detail,
		"fix", strings.ReplaceAll(r.Fix, "\n", "; "), "check", "lormas-agent doctor")
}

// printProblems writes the configuration problems, one per line.
func printProblems(w io.Writer, problems []string) {
	fmt.Fprintln(w, "lormas-agent: invalid configuration:")
	for _, p := range problems {
		fmt.Fprintln(w, "  "+p)
	}
}
