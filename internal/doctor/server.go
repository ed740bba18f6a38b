package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lormas/lormas-agent/internal/endpoint"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/transport"
)

// hostPort is the server's TCP address, with the scheme's default port.
func hostPort(server *url.URL) string {
	if server.Port() != "" {
		return server.Host
	}
	port := "80"
	if server.Scheme == "wss" {
		port = "443"
	}
	return net.JoinHostPort(server.Hostname(), port)
}

// proxyFor returns the proxy the agent would use for server, or nil: proxy
// chooses it (config.Config.Proxy: HTTPS_PROXY, HTTP_PROXY, NO_PROXY as
// configured, .env included); nil reads the process environment, as
// transport.Dial does.
func proxyFor(server *url.URL, proxy transport.ProxyFunc) *url.URL {
	req, err := http.NewRequest(http.MethodGet, endpoint.HTTPURL(server, endpoint.NodeSocketPath), nil)
	if err != nil {
		return nil
	}
	if proxy == nil {
		proxy = transport.ProxyFromEnvironment
	}
	p, _ := proxy(req)
	return p
}

// CheckServerReachable opens a TCP connection to the server (or to the
// proxy the agent would use).
func CheckServerReachable(ctx context.Context, server *url.URL, proxy transport.ProxyFunc, timeout time.Duration) Result {
	r := Result{Check: "server reachable"}
	addr, via := hostPort(server), ""
	if p := proxyFor(server, proxy); p != nil {
		addr, via = p.Host, " (through proxy "+endpoint.Redact(p.String())+")"
		if p.Port() == "" {
			addr = net.JoinHostPort(p.Hostname(), map[bool]string{true: "443", false: "80"}[p.Scheme == "https"])
		}
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot connect to %s%s: %v", addr, via, err)
		r.Fix = fmt.Sprintf("check SERVER_URL (%s), that the server is running, DNS, and firewalls between this host and %s", endpoint.Redact(server.String()), addr)
		return r
	}
	conn.Close()
	r.Status, r.Detail = OK, "TCP connection to "+addr+via
	return r
}

// CheckTLS verifies the server's certificate as the agent does (system
// roots plus TLS_CA_FILE). With TLS_INSECURE_SKIP_VERIFY on, it still
// verifies, to say whether the option can be turned off.
func CheckTLS(ctx context.Context, server *url.URL, conf *tls.Config, proxy transport.ProxyFunc, timeout time.Duration) Result {
	r := Result{Check: "tls"}
	if server.Scheme != "wss" {
		r.Status, r.Detail = Skip, "ws:// carries the token unencrypted; use wss:// across untrusted networks"
		return r
	}
	if p := proxyFor(server, proxy); p != nil {
		r.Status, r.Detail = Skip, "the server is reached through a proxy: verified by the upgrade check"
		return r
	}
	c := conf.Clone()
	insecure := c.InsecureSkipVerify
	c.InsecureSkipVerify = false
	c.ServerName = server.Hostname()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: c}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", hostPort(server))
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, "certificate of "+server.Hostname()+" not verified: "+err.Error(), tlsFix(err)
		if insecure {
			r.Detail += " (the agent connects anyway: TLS_INSECURE_SKIP_VERIFY=true)"
		}
		return r
	}
	defer conn.Close()
	state := conn.(*tls.Conn).ConnectionState()
	leaf := state.PeerCertificates[0]
	r.Status = OK
	r.Detail = fmt.Sprintf("certificate for %s issued by %q, valid until %s", server.Hostname(), leaf.Issuer.CommonName, leaf.NotAfter.Format(time.DateOnly))
	if insecure {
		r.Status = Fail
		r.Detail = "TLS_INSECURE_SKIP_VERIFY=true although the " + r.Detail + " verifies"
		r.Fix = "turn TLS_INSECURE_SKIP_VERIFY off: verification succeeds"
	}
	return r
}

func tlsFix(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return "set TLS_CA_FILE to the PEM file of the CA that signed the server's certificate"
	case errors.As(err, &he):
		names := strings.Join(he.Certificate.DNSNames, ", ")
		return "use a SERVER_URL host the certificate names (" + names + "), or reissue the certificate for this host"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "the server's certificate is expired or not yet valid: renew it (or check this host's clock)"
	case strings.Contains(err.Error(), "certificate required") || strings.Contains(err.Error(), "bad certificate"):
		return "the server wants a client certificate: set TLS_CERT_FILE and TLS_KEY_FILE"
	}
	return "check that SERVER_URL's port serves TLS (wss://) and the certificate chain is complete"
}

// probeWait bounds how long CheckUpgrade waits for a server to close a
// probe (it does so at once when it knows probes).
const probeWait = 3 * time.Second

// CheckUpgrade dials the node WebSocket once with the token, as the agent
// does (tokenInQuery: NODE_TOKEN_IN_QUERY), marked as a probe
// (protocol.ProbeHeader): a Lormas server checks the token and the upgrade,
// then closes at once without touching the node's running session, so
// doctor can run on a live node. A server that does not know probes takes
// the dial for the node's session (replacing a running agent's, which
// reconnects by itself); the result says so.
func CheckUpgrade(ctx context.Context, server *url.URL, token string, tokenInQuery bool, conf *tls.Config, proxy transport.ProxyFunc, version string, timeout time.Duration) Result {
	r := Result{Check: "websocket upgrade"}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := transport.Dial(ctx, transport.Config{
		Server: server, Token: token, TokenHeaderOnly: !tokenInQuery, Version: version, TLS: conf, Proxy: proxy,
		DialTimeout: timeout, HandshakeTimeout: timeout, Probe: true,
	})
	if err != nil {
		detail := strings.ReplaceAll(err.Error(), token, "REDACTED")
		r.Status, r.Detail = Fail, detail
		var ue *transport.UpgradeError
		switch {
		case errors.Is(err, transport.ErrAuth):
			r.Fix = "the server refused the node token (revoked, rotated, expired, or issued by another server):\n" +
				"issue a new one (PATCH /api/nodes/{id}/token) and update NODE_TOKEN or NODE_TOKEN_FILE,\n" +
				"or, with enrollment, delete STATE_DIR/node-token so the agent enrolls again"
		case errors.As(err, &ue) && ue.Status == http.StatusNotFound:
			r.Fix = endpoint.NotFoundHint(server, ue.URL)
		default:
			r.Fix = "check SERVER_URL and that a proxy or load balancer in between allows WebSocket upgrades"
		}
		return r
	}
	shown := endpoint.Redact(transport.SocketURL(server, token, tokenInQuery))
	wait := time.NewTimer(min(probeWait, timeout))
	defer wait.Stop()
	select {
	case <-conn.Done():
		var ce *transport.CloseError
		if errors.As(conn.Err(), &ce) && !ce.Local && ce.Reason == protocol.ProbeCloseReason {
			r.Status, r.Detail = OK, "the server accepted the node token and upgraded "+shown+" (a probe: a running agent stays connected)"
			return r
		}
		r.Status, r.Detail = OK, "the server accepted the node token and upgraded "+shown+", then closed: "+strings.ReplaceAll(fmt.Sprint(conn.Err()), token, "REDACTED")
		return r
	case <-wait.C:
	case <-ctx.Done():
	}
	_ = conn.Close(transport.CloseNormal, "lormas-agent doctor")
	r.Status = OK
	r.Detail = "the server accepted the node token and upgraded " + shown + "; it does not know doctor's probe, " +
		"so it took this check for the node's session: a running agent with this token was disconnected and reconnects by itself"
	return r
}
