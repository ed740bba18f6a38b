package server

import (
	"log/slog"
	"testing"
)

// fleetHeartbeat is a heartbeat as scripts/fleet's simulated agents send
// it (the resources of a current lormas-agent).
const fleetHeartbeat = `{"nodeId":"node-1","resources":{"containers":{"running":5,"total":7},"cpu":0.12,` +
	`"cpuCores":8,"diskTotalBytes":214748364800,"diskUsedBytes":53687091200,"load1":0.42,"load15":0.31,"load5":0.37,` +
	`"memory":"1.2GB","memoryTotalBytes":16777216000,"memoryUsedBytes":1288490188,"uptimeSeconds":864000},` +
	`"timestamp":"2026-11-30T06:00:00.123456789Z","type":"heartbeat"}`

// BenchmarkAgentFrame measures what the server does with one heartbeat,
// and one pong, on the agent's read loop, without event subscribers:
// nearly all a fleet sends.
func BenchmarkAgentFrame(b *testing.B) {
	cfg, err := LoadConfig(testEnv(b.TempDir(), map[string]string{"HEARTBEAT_FLUSH_INTERVAL": "1h"}))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	s := &session{srv: srv, nodeID: "node-1", name: "node-1", remote: "127.0.0.1:1"}
	s.log = sessionLog{s}
	for _, f := range []struct{ name, frame string }{
		{"heartbeat", fleetHeartbeat},
		{"pong", `{"type":"pong"}`},
	} {
		b.Run(f.name, func(b *testing.B) {
			frame := []byte(f.frame)
			b.ReportAllocs()
			for b.Loop() {
				srv.handleText(s, frame) // as OnMessage does
			}
		})
	}
}
