// Command lormas-server is the reference Lormas control plane: a REST API to
// register nodes and send them container commands, the WebSocket endpoint
// node agents connect to, and SQLite storage. See `lormas-server help` for
// the configuration and internal/server for the API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/lormas/lormas-agent/internal/buildinfo"
	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/server"
)

// Set at build time: go build -ldflags "-X main.version=1.2.3 -X main.commit=abcdef";
// without them, main reads the toolchain's VCS stamp (internal/buildinfo).
var (
	version = "dev"
	commit  = "unknown"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // cannot start, or the listener failed
	exitUsage   = 2 // invalid configuration or command line
)

// shutdownTimeout bounds the graceful shutdown after SIGINT/SIGTERM.
const shutdownTimeout = 15 * time.Second

func main() {
	version, commit = buildinfo.Resolve(version, commit)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal a second one kills at once, as without a handler.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one invocation and returns its exit status. It has no global
// state, so tests drive it like the shell does.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, environ, stderr)
	case "help", "-h", "-help", "--help":
		printHelp(stdout)
		return exitOK
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	case "healthcheck":
		return healthcheck(ctx, args, environ, stdout, stderr)
	case "admin-token", "enrollment-token":
		return printToken(cmd, args, environ, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "lormas-server: unknown command %q\n\n", cmd)
		printUsage(stderr)
		return exitUsage
	}
}

func versionLine() string {
	return fmt.Sprintf("lormas-server %s (commit %s, %s, %s/%s)", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  lormas-server [serve]         run the server (default)
  lormas-server help            print this help and the configuration variables
  lormas-server version         print version, commit and Go version
  lormas-server healthcheck [-url URL]
                                exit 0 when the running server's /healthz
                                answers 200, else 1
  lormas-server admin-token     print the admin token: ADMIN_TOKEN, or the one
                                generated into DATA_DIR/admin-token
  lormas-server enrollment-token
                                print the enrollment token: ENROLLMENT_TOKEN,
                                or the generated one
`)
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "lormas-server: the reference Lormas control plane.")
	fmt.Fprintln(w)
	printUsage(w)
	fmt.Fprint(w, `
Configuration comes from environment variables. Invalid configuration exits
with status 2 and one line per problem. Secrets not given are generated on
first start and kept in DATA_DIR; a generated admin token is written to
DATA_DIR/admin-token (mode 0600), which lormas-server admin-token prints.

Variables:

`)
	fmt.Fprint(w, server.Usage())
	fmt.Fprint(w, `
Exit status: 0 after a graceful shutdown (SIGINT, SIGTERM), 1 when the server
cannot start, 2 for invalid configuration.
`)
}

// serve runs the server until ctx is cancelled.
func serve(ctx context.Context, environ []string, stderr io.Writer) int {
	cfg, err := server.LoadConfig(server.Environ(environ))
	if err != nil {
		var ce *server.ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintf(stderr, "lormas-server: %s\n", p)
			}
			return exitUsage
		}
		fmt.Fprintf(stderr, "lormas-server: %v\n", err)
		return exitUsage
	}
	logger, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(stderr, "lormas-server: %v\n", err)
		return exitUsage
	}
	if err := runServer(ctx, cfg, logger, stderr); err != nil {
		logger.Error("lormas-server failed", "err", err)
		return exitFailure
	}
	return exitOK
}

func runServer(ctx context.Context, cfg server.Config, logger *slog.Logger, stderr io.Writer) error {
	// Listen first: a taken port fails before anything is generated.
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv, err := server.New(cfg, logger)
	if err != nil {
		ln.Close()
		return err
	}
	if token := srv.GeneratedAdminToken(); token != "" {
		printAdminToken(stderr, token, srv.GeneratedAdminTokenFile())
	}
	logger.Info("lormas-server listening", "addr", ln.Addr().String(), "tls", cfg.TLSCertFile != "",
		"data_dir", cfg.DataDir, "version", version)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case serveErr = <-served:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if serveErr == nil {
		serveErr = <-served
	}
	if serveErr != nil {
		return fmt.Errorf("serve: %w", serveErr)
	}
	logger.Info("lormas-server stopped")
	return nil
}

// printAdminToken tells the operator where the generated admin token is:
// in file (DATA_DIR/admin-token), which `lormas-server admin-token` prints,
// so the token itself stays out of the log, which log shipping and
// `docker logs` keep. Only when the file could not be written is the token
// printed, once, on stderr and not through the logger.
func printAdminToken(w io.Writer, token, file string) {
	if file != "" {
		fmt.Fprintf(w, `
================================================================================
lormas-server generated an admin token and wrote it to %s
(mode 0600). Print it with:

    lormas-server admin-token
    docker compose exec -T lormas-server lormas-server admin-token   # compose

Use it as "Authorization: Bearer <token>" on /api. To replace it, start the
server with ADMIN_TOKEN (or ADMIN_TOKEN_FILE).
================================================================================

`, file)
		return
	}
	fmt.Fprintf(w, `
================================================================================
lormas-server generated an admin token. It could not be written to DATA_DIR,
so it is shown only this once: the server keeps only its hash. Use it as
"Authorization: Bearer <token>" on /api.

    ADMIN_TOKEN=%s

To replace a lost token, start the server with ADMIN_TOKEN (or ADMIN_TOKEN_FILE).
================================================================================

`, token)
}
