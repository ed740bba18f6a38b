package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/lxzan/gws"

	"github.com/lormas/lormas-agent/internal/endpoint"
)

// ProxyFunc picks the proxy for a request to the server (an http:// URL
// for ws, https:// for wss, never carrying the token); a nil URL means a
// direct connection.
type ProxyFunc func(*http.Request) (*url.URL, error)

// dialer is the gws.Dialer of one dial: it honours the dial context and
// tunnels through an HTTP CONNECT proxy when the proxy function names one.
// gws does not read proxy variables itself; this is its NewDialer hook.
type dialer struct {
	ctx     context.Context
	timeout time.Duration
	proxy   ProxyFunc
	secure  bool        // wss: decide the proxy as for https
	tls     *tls.Config // for an https:// proxy
}

var _ gws.Dialer = (*dialer)(nil)

// Dial connects to addr (host:port of the server), through the proxy when
// one applies.
func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()

	scheme := "http"
	if d.secure {
		scheme = "https"
	}
	var proxyURL *url.URL
	if d.proxy != nil {
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: scheme, Host: addr}, Header: http.Header{}}
		var err error
		if proxyURL, err = d.proxy(req); err != nil {
			return nil, fmt.Errorf("proxy from environment: %w", err)
		}
	}
	var nd net.Dialer
	if proxyURL == nil {
		return nd.DialContext(ctx, network, addr)
	}
	return d.connect(ctx, &nd, proxyURL, addr)
}

// connect opens a tunnel to addr through an http:// or https:// proxy.
func (d *dialer) connect(ctx context.Context, nd *net.Dialer, proxyURL *url.URL, addr string) (net.Conn, error) {
	shown := endpoint.Redact(proxyURL.String())
	proxyAddr := proxyURL.Host
	if proxyURL.Port() == "" {
		port := "80"
		if proxyURL.Scheme == "https" {
			port = "443"
		}
		proxyAddr = net.JoinHostPort(proxyURL.Hostname(), port)
	}
	if proxyURL.Scheme != "http" && proxyURL.Scheme != "https" {
		return nil, fmt.Errorf("proxy %s: scheme %q is not supported (use http or https)", shown, proxyURL.Scheme)
	}
	conn, err := nd.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", shown, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if proxyURL.Scheme == "https" {
		cfg := d.tls.Clone()
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		cfg.ServerName = proxyURL.Hostname()
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("proxy %s: TLS: %w", shown, err)
		}
		conn = tc
	}

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{},
	}
	if u := proxyURL.User; u != nil {
		pass, _ := u.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pass))
		req.Header.Set("Proxy-Authorization", "Basic "+cred)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s: send CONNECT: %w", shown, ctxErr(ctx, err))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %s: read CONNECT response: %w", shown, ctxErr(ctx, err))
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		if resp.StatusCode == http.StatusProxyAuthRequired {
			return nil, fmt.Errorf("proxy %s requires authentication (HTTP 407): put credentials in the proxy URL", shown)
		}
		return nil, fmt.Errorf("proxy %s refused CONNECT to %s: HTTP %d", shown, addr, resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// ctxErr prefers the context's error (timeout, cancel) over the I/O error it
// caused by closing the connection.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// bufferedConn serves bytes the CONNECT response reader buffered before
// reading from the connection again.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
