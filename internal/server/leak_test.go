package server

import (
	"net"
	"net/http"
	"testing"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

func TestNoGoroutinesOutliveShutdown(t *testing.T) {
	testsupport.CheckLeaks(t) // once Shutdown and the test agents' closes are done
	cfg, err := LoadConfig(testEnv(t.TempDir(), nil))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	h := &harness{t: t, srv: srv, url: "http://" + ln.Addr().String(), client: client}

	// Exercise everything that starts goroutines: sessions (reader,
	// writer), a command, an event stream, a follow log stream, a resend.
	n := h.createNode("busy")
	a := h.connect(n.ID, n.Token)
	events := h.stream("/api/nodes/" + n.ID + "/events")
	events.next()
	logs := h.stream("/api/nodes/" + n.ID + "/containers/c/logs?follow=1")
	a.command()
	res := h.postCommand(n.ID, map[string]any{"action": "start", "containerId": "c"})
	cmd := a.command()
	a.send(protocol.Success(cmd.ID, protocol.MessageResult{Message: protocol.MsgStarted}, nil))
	if r := <-res; r.status != http.StatusOK {
		t.Fatalf("command = %d %s", r.status, r.body)
	}
	pending := h.postCommand(n.ID, map[string]any{"action": "stop", "containerId": "c"})
	a.command()
	_ = a.conn.WriteClose(1001, nil)
	b := h.connect(n.ID, n.Token)
	b.send(protocol.AgentIdentify{NodeName: "busy", Version: "test"})
	b.command() // the resent stop

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	<-pending
	events.ended()
	logs.ended()
	b.waitClosed()
}
