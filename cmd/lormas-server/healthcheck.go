package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/lormas/lormas-agent/internal/health/httpcheck"
	"github.com/lormas/lormas-agent/internal/server"
)

// healthcheck asks the running server's /healthz with the probe the agent's
// healthcheck uses too (internal/health/httpcheck), for the image's
// HEALTHCHECK (the distroless image has no shell or curl). By default it
// derives the URL from LISTEN_ADDR and TLS_CERT_FILE.
func healthcheck(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "health URL (default: derived from LISTEN_ADDR and TLS_CERT_FILE)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	env := server.Environ(environ)
	if *target == "" {
		u, err := healthURL(env["LISTEN_ADDR"], env["TLS_CERT_FILE"] != "")
		if err != nil {
			fmt.Fprintf(stderr, "lormas-server healthcheck: %v\n", err)
			return exitUsage
		}
		*target = u
	}
	if _, err := url.Parse(*target); err != nil {
		fmt.Fprintf(stderr, "lormas-server healthcheck: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := httpcheck.Get(ctx, *target); err != nil {
		fmt.Fprintf(stderr, "lormas-server healthcheck: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "ok: %s\n", *target)
	return exitOK
}

// healthURL turns a listen address into the URL to check it on: a wildcard
// or empty host becomes loopback.
func healthURL(listenAddr string, tlsOn bool) (string, error) {
	if listenAddr == "" {
		listenAddr = ":3000"
	}
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", fmt.Errorf("LISTEN_ADDR %q: %w", listenAddr, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "127.0.0.1"
	}
	scheme := "http"
	if tlsOn {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}
