package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/lormas/lormas-agent/internal/health/httpcheck"
)

// ErrDisabled is returned by Check when HEALTH_ADDR is empty.
var ErrDisabled = errors.New("health endpoint disabled (HEALTH_ADDR is empty)")

// Check GETs /healthz of the agent listening on addr (HEALTH_ADDR) and
// returns nil on 200. A listen address with no host or an unspecified one
// (":9321", "0.0.0.0:9321", "[::]:9321") is probed on loopback. Without a
// deadline on ctx, httpcheck.DefaultTimeout applies.
func Check(ctx context.Context, addr string) error {
	target, err := ProbeAddr(addr)
	if err != nil {
		return err
	}
	url := "http://" + target + PathAlive
	err = httpcheck.Get(ctx, url)
	var se *httpcheck.StatusError
	if errors.As(err, &se) {
		return fmt.Errorf("healthcheck %s: %s: %s", url, se.Status, strings.TrimSpace(se.Body))
	}
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	return nil
}

// ProbeAddr turns a listen address into the address to connect to.
func ProbeAddr(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", ErrDisabled
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("health address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}
