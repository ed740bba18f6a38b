package docker

import (
	"context"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// BenchmarkLogs measures a logs command (10 lines) of an indexed container
// against an in-process daemon over loopback TCP: the one ContainerLogs
// call, demultiplexing and the lines returned. The daemon's side (a
// prepared answer) is in the figures too.
func BenchmarkLogs(b *testing.B) {
	var stream []byte
	for i := range 10 {
		line := "2026-11-30T06:00:00.000000000Z line " + strconv.Itoa(i) + " of the benchmark container's output\n"
		hdr := [8]byte{1}
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(line)))
		stream = append(append(stream, hdr[:]...), line...)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		switch {
		case r.URL.Path == "/_ping":
			_, _ = w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/containers/bench-logs/json"):
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"Id":"0123456789abcdef","Name":"/bench-logs","State":{"Status":"running","Running":true},
"Config":{"Tty":false,"Labels":{"lormas.managed":"true","lormas.node":"node-1","lormas.container":"bench-logs"}}}`))
		case strings.HasSuffix(r.URL.Path, "/containers/0123456789abcdef/logs"):
			w.Header().Set("Content-Type", "application/vnd.docker.multiplexed-stream")
			_, _ = w.Write(stream)
		default:
			http.NotFound(w, r)
		}
	}))
	b.Cleanup(srv.Close)
	b.Setenv("DOCKER_API_VERSION", "")
	daemon := Daemon{Host: "tcp://" + strings.TrimPrefix(srv.URL, "http://")}
	e, err := New(Options{Daemon: daemon, NodeID: "node-1", CallTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	e.index.subscribed(true) // as while the agent reads events: the container gets indexed

	lines := 10
	cmd := &protocol.Command{Action: protocol.ActionLogs, ContainerID: "bench-logs", Lines: &lines}
	p, err := cmd.LogsParams()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for range 10 { // warm-up: connection, index entry
		if _, err := e.Logs(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := e.Logs(ctx, p)
		if err != nil || len(got) != 10 {
			b.Fatalf("got %d lines, %v; want 10", len(got), err)
		}
	}
}
