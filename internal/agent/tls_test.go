package agent_test

import (
	"testing"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/agent/agenttest"
	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func TestWSSWithCAFileAndClientCertificate(t *testing.T) {
	serverCA := agenttest.NewCA(t, "server-ca")
	clientCA := agenttest.NewCA(t, "client-ca")
	certFile, keyFile := clientCA.ClientFiles(t, "node-a")
	caFile := serverCA.CertFile(t)
	h := start(t, nil, setup{
		srvOpts: agenttest.ServerOptions{TLS: serverCA.ServerTLS(t, clientCA)},
		opts: func(o *agent.Options) {
			o.TLSCAFile, o.TLSCertFile, o.TLSKeyFile = caFile, certFile, keyFile
		},
	})
	h.identified()
	h.send(protocol.Command{ID: "c", Action: protocol.ActionStart, ContainerID: "web"})
	if r := h.srv.ExpectResult("c"); r.Status != protocol.StatusSuccess {
		t.Errorf("result over wss %+v", r)
	}
	if len(h.logs.entries("TLS certificate verification is disabled (TLS_INSECURE_SKIP_VERIFY=true): the server is not authenticated")) != 0 {
		t.Error("verification warning logged though verification is on")
	}
}

func TestWSSWithoutTrustedCAKeepsRetrying(t *testing.T) {
	serverCA := agenttest.NewCA(t, "server-ca")
	h := start(t, nil, setup{srvOpts: agenttest.ServerOptions{TLS: serverCA.ServerTLS(t, nil)}})
	testsupport.WaitFor(t, "failed dials", func() bool { return len(h.logs.entries("connection failed")) >= 2 })
	if h.srv.Connections() != 0 {
		t.Error("connected to a server whose certificate is not trusted")
	}
}

func TestInsecureSkipVerifyWarnsAtEveryDial(t *testing.T) {
	serverCA := agenttest.NewCA(t, "server-ca")
	h := start(t, nil, setup{
		srvOpts: agenttest.ServerOptions{TLS: serverCA.ServerTLS(t, nil)},
		opts:    func(o *agent.Options) { o.TLSInsecureSkipVerify = true },
	})
	h.identified()
	h.srv.CloseConns(1012, "restart")
	h.identified()
	if n := len(h.logs.entries("TLS certificate verification is disabled (TLS_INSECURE_SKIP_VERIFY=true): the server is not authenticated")); n != 2 {
		t.Errorf("insecure warning logged %d times for 2 dials", n)
	}
}
