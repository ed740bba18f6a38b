package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// defaultCheckTimeout applies when ctx has no deadline.
const defaultCheckTimeout = 5 * time.Second

// ErrDisabled is returned by Check when HEALTH_ADDR is empty.
var ErrDisabled = errors.New("health endpoint disabled (HEALTH_ADDR is empty)")

// Check GETs /healthz of the agent listening on addr (HEALTH_ADDR) and
// returns nil on 200. A listen address with no host or an unspecified one
// (":9321", "0.0.0.0:9321", "[::]:9321") is probed on loopback.
func Check(ctx context.Context, addr string) error {
	target, err := ProbeAddr(addr)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCheckTimeout)
		defer cancel()
	}
	url := "http://" + target + PathAlive
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	// No proxy: the probe targets this host.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
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
