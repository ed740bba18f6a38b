// Command lormas-agent is the Lormas node agent: it dials out to the Lormas
// server over WebSocket, executes the server's container commands against
// the local Docker Engine and reports results, logs, events and host
// resource usage. See `lormas-agent help` for the configuration.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/lormas/lormas-agent/internal/buildinfo"
	"github.com/lormas/lormas-agent/internal/config"
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
	exitFailure = 1 // runtime failure: MAX_RECONNECT_ATTEMPTS exhausted, cannot start
	exitUsage   = 2 // invalid configuration or command line
)

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

// run executes one invocation of the command and returns its exit status.
// It has no global state, so tests drive it like the shell does.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runAgent(ctx, args, environ, stderr)
	case "help", "-h", "-help", "--help":
		printHelp(stdout)
		return exitOK
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	case "healthcheck":
		return healthcheck(ctx, args, environ, stdout, stderr)
	case "doctor":
		return runDoctor(ctx, args, environ, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "lormas-agent: unknown command %q\n\n", cmd)
		printUsage(stderr)
		return exitUsage
	}
}

func versionLine() string {
	return fmt.Sprintf("lormas-agent %s (commit %s, %s, %s/%s)", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  lormas-agent [run]         connect to the server, run its commands (default)
  lormas-agent help          print this help and the configuration variables
  lormas-agent version       print version, commit and Go version
  lormas-agent healthcheck [-addr ADDR]
                             exit 0 when the running agent's /healthz answers
                             200, else 1
  lormas-agent doctor        check configuration, Docker access, server and
                             token, and print the fixes; a running agent stays
                             connected
`)
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "lormas-agent: the Lormas node agent.")
	fmt.Fprintln(w)
	printUsage(w)
	fmt.Fprint(w, `
Configuration comes from environment variables and from a .env file in the
working directory (KEY=VALUE lines; the environment wins). .env is read only
when it is a regular file (not a symbolic link) owned by the agent's user or
root and not writable by group or others; otherwise the agent refuses to
start. Invalid configuration exits with status 2 and one line per problem.

`)
	fmt.Fprintln(w, "Variables (the README has them as a Markdown table):")
	fmt.Fprintln(w)
	fmt.Fprint(w, config.TextTable())
	fmt.Fprint(w, `
Exit status: 0 after a graceful shutdown (SIGINT, SIGTERM), 1 when the agent
cannot start or MAX_RECONNECT_ATTEMPTS is exhausted, 2 for invalid
configuration.
`)
}
