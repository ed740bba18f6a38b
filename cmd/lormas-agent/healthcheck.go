package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/lormas/lormas-agent/internal/config"
	"github.com/lormas/lormas-agent/internal/health"
)

// healthcheck probes the running agent's /healthz, for the image's
// HEALTHCHECK (the distroless image has no shell or curl). The address is
// -addr, else HEALTH_ADDR (environment, then .env), else its default.
func healthcheck(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "health endpoint address (default: HEALTH_ADDR)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *addr == "" {
		v, ok, err := config.LookupEnv(environ, "HEALTH_ADDR")
		if err != nil {
			// The agent refuses this .env too: it is not running.
			fmt.Fprintf(stderr, "unhealthy: %v\n", err)
			return exitFailure
		}
		if !ok {
			v = config.Default("HEALTH_ADDR")
		}
		*addr = v
	}
	if err := health.Check(ctx, *addr); err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "ok")
	return exitOK
}
