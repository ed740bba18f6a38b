package transport_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
	"github.com/lormas/lormas-agent/internal/transport"
)

func TestWSSWithCAFileAndClientCertificate(t *testing.T) {
	testsupport.CheckLeaks(t)
	serverCA := agenttest.NewCA(t, "server-ca")
	clientCA := agenttest.NewCA(t, "client-ca")
	s := agenttest.NewServer(t, agenttest.ServerOptions{TLS: serverCA.ServerTLS(t, clientCA)})
	certFile, keyFile := clientCA.ClientFiles(t, "node-1")

	t.Run("verified server, client certificate", func(t *testing.T) {
		tlsCfg, err := transport.TLSConfig(serverCA.CertFile(t), certFile, keyFile, false)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config(t, s.URL(), nil)
		cfg.TLS = tlsCfg
		c := dial(t, s, cfg)
		if err := c.Send(context.Background(), []byte(`{"type":"pong"}`)); err != nil {
			t.Fatal(err)
		}
		s.Expect(protocol.TypePong)
		if tlsCfg.ServerName != "" {
			t.Errorf("the TLS template was modified: ServerName %q", tlsCfg.ServerName)
		}
	})
	t.Run("unknown server CA", func(t *testing.T) {
		tlsCfg, err := transport.TLSConfig("", certFile, keyFile, false)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config(t, s.URL(), nil)
		cfg.TLS = tlsCfg
		_, err = transport.Dial(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("dial = %v, want a certificate verification error", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		tlsCfg, err := transport.TLSConfig(serverCA.CertFile(t), "", "", false)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config(t, s.URL(), nil)
		cfg.TLS = tlsCfg
		if _, err := transport.Dial(context.Background(), cfg); err == nil {
			t.Fatal("dial without a client certificate succeeded against an mTLS server")
		}
	})
	t.Run("insecure skips verification", func(t *testing.T) {
		tlsCfg, err := transport.TLSConfig("", certFile, keyFile, true)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config(t, s.URL(), nil)
		cfg.TLS = tlsCfg
		dial(t, s, cfg)
	})
}

// connectProxy is a minimal HTTP CONNECT proxy for tests.
type connectProxy struct {
	ln      net.Listener
	auth    string            // required Proxy-Authorization, or ""
	routes  map[string]string // CONNECT target -> real address (fake host names)
	mu      sync.Mutex
	targets []string
	wg      sync.WaitGroup
}

func newConnectProxy(t *testing.T, auth string) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, auth: auth}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *connectProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

func (p *connectProxy) handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Method+" "+req.Host)
	p.mu.Unlock()
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	if p.auth != "" && req.Header.Get("Proxy-Authorization") != p.auth {
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
		return
	}
	target := req.Host
	if r, ok := p.routes[target]; ok {
		target = r
	}
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (p *connectProxy) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

func TestDialThroughConnectProxy(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{Token: token})
	target := strings.TrimPrefix(s.URL(), "ws://")
	cred := "Basic " + base64.StdEncoding.EncodeToString([]byte("agent:s3cret"))

	tests := []struct {
		name     string
		auth     string
		user     *url.Userinfo
		wantErr  string
		wantSeen bool
	}{
		{name: "plain proxy", wantSeen: true},
		{name: "proxy with credentials", auth: cred, user: url.UserPassword("agent", "s3cret"), wantSeen: true},
		{name: "missing credentials", auth: cred, wantErr: "407"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newConnectProxy(t, tc.auth)
			proxyURL := &url.URL{Scheme: "http", Host: p.ln.Addr().String(), User: tc.user}
			cfg := config(t, s.URL(), nil)
			var asked []string
			cfg.Proxy = func(r *http.Request) (*url.URL, error) {
				asked = append(asked, r.URL.String())
				return proxyURL, nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := transport.Dial(ctx, cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("dial = %v, want an error containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error shows the proxy password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial through proxy: %v", err)
			}
			defer c.Close(transport.CloseNormal, "")
			if err := c.Send(ctx, []byte(`{"type":"pong"}`)); err != nil {
				t.Fatal(err)
			}
			s.Expect(protocol.TypePong)
			if got := p.seen(); len(got) != 1 || got[0] != "CONNECT "+target {
				t.Errorf("proxy saw %v, want [CONNECT %s]", got, target)
			}
			// The proxy decision sees an http URL of the server, never the token.
			if len(asked) != 1 || asked[0] != "http://"+target {
				t.Errorf("proxy func asked for %v, want [http://%s]", asked, target)
			}
		})
	}
}

func TestProxyDecisionUsesHTTPSForWSS(t *testing.T) {
	testsupport.CheckLeaks(t)
	ca := agenttest.NewCA(t, "ca")
	s := agenttest.NewServer(t, agenttest.ServerOptions{TLS: ca.ServerTLS(t, nil)})
	tlsCfg, err := transport.TLSConfig(ca.CertFile(t), "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	p := newConnectProxy(t, "")
	cfg := config(t, s.URL(), nil)
	cfg.TLS = tlsCfg
	var scheme string
	cfg.Proxy = func(r *http.Request) (*url.URL, error) {
		scheme = r.URL.Scheme
		return &url.URL{Scheme: "http", Host: p.ln.Addr().String()}, nil
	}
	dial(t, s, cfg)
	if scheme != "https" {
		t.Errorf("proxy decided on scheme %q, want https (HTTPS_PROXY) for wss", scheme)
	}
	if len(p.seen()) != 1 {
		t.Errorf("wss did not go through the proxy: %v", p.seen())
	}
}

func TestProxyErrorIsReported(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	cfg := config(t, s.URL(), nil)
	cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, errors.New("bad proxy setting") }
	_, err := transport.Dial(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "bad proxy setting") {
		t.Fatalf("dial = %v, want the proxy error", err)
	}
}

// The default proxy decision reads HTTP_PROXY/HTTPS_PROXY/NO_PROXY at each
// dial.
func TestDefaultProxyFromEnvironment(t *testing.T) {
	testsupport.CheckLeaks(t)
	s := agenttest.NewServer(t, agenttest.ServerOptions{})
	p := newConnectProxy(t, "")
	// A name that only the proxy can reach (loopback targets are never proxied).
	p.routes = map[string]string{"lormas.test:80": strings.TrimPrefix(s.URL(), "ws://")}
	t.Setenv("HTTP_PROXY", "http://"+p.ln.Addr().String())
	t.Setenv("http_proxy", "")
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	cfg := config(t, "ws://lormas.test", nil)
	cfg.Proxy = nil
	c := dial(t, s, cfg)
	if err := c.Send(context.Background(), []byte(`{"type":"pong"}`)); err != nil {
		t.Fatal(err)
	}
	s.Expect(protocol.TypePong)
	if got := p.seen(); len(got) != 1 || got[0] != "CONNECT lormas.test:80" {
		t.Errorf("proxy saw %v, want [CONNECT lormas.test:80]", got)
	}

	// NO_PROXY exempts the server: a direct dial, which cannot resolve the
	// made-up name, and the proxy sees nothing more.
	t.Setenv("NO_PROXY", "lormas.test")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := transport.Dial(ctx, cfg); err == nil {
		c.Close(transport.CloseNormal, "")
		t.Fatal("dial of lormas.test succeeded without the proxy")
	}
	if got := p.seen(); len(got) != 1 {
		t.Errorf("NO_PROXY ignored: proxy saw %v", got)
	}
}
