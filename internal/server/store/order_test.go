package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkRecordNodeUpdates writes one flush of a fleet's heartbeats
// (every node's, as the server's reports do every interval) in
// transactions of 500, in the order given: random (a map's), or the
// table's own order.
func BenchmarkRecordNodeUpdates(b *testing.B) {
	const nodes, chunk = 19000, 500
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), FileName))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = uuid.NewString()
		n := testNode(ids[i], fmt.Sprintf("fleet-%05d", i))
		if err := insertNode(ctx, tx, n); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	resources := json.RawMessage(`{"containers":{"running":5,"total":7},"cpu":0.12,"cpuCores":8,"diskTotalBytes":214748364800,` +
		`"diskUsedBytes":53687091200,"load1":0.42,"load15":0.31,"load5":0.37,"memory":"1.2GB","memoryTotalBytes":16777216000,` +
		`"memoryUsedBytes":1288490188,"uptimeSeconds":864000}`)
	for _, order := range []string{"random", "table", "random, sorted by InTableOrder"} {
		b.Run(order, func(b *testing.B) {
			updates := make([]NodeUpdate, nodes)
			for i, id := range ids {
				updates[i] = NodeUpdate{ID: id, HasHeartbeat: true, LastHeartbeat: time.Now(), Resources: resources}
			}
			if order != "table" {
				rand.Shuffle(len(updates), func(i, j int) { updates[i], updates[j] = updates[j], updates[i] })
			}
			b.ReportAllocs()
			for b.Loop() {
				if order == "random, sorted by InTableOrder" {
					b.StopTimer()
					rand.Shuffle(len(updates), func(i, j int) { updates[i], updates[j] = updates[j], updates[i] })
					b.StartTimer()
					if err := s.InTableOrder(ctx, updates); err != nil {
						b.Fatal(err)
					}
				}
				for rest := updates; len(rest) > 0; {
					c := rest[:min(chunk, len(rest))]
					rest = rest[len(c):]
					if _, err := s.RecordNodeUpdates(ctx, c); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/flush")
		})
	}
}

// TestInTableOrder: updates come back in the order the nodes were inserted
// (their rows' order), those of unknown nodes last, none lost.
func TestInTableOrder(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), FileName))
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("node-%d-%s", i, uuid.NewString()[:4])
		if err := s.CreateNode(ctx, testNode(id, fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	updates := []NodeUpdate{{ID: ids[3]}, {ID: "gone"}, {ID: ids[0]}, {ID: ids[4]}, {ID: ids[1]}}
	if err := s.InTableOrder(ctx, updates); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range updates {
		got = append(got, u.ID)
	}
	want := []string{ids[0], ids[1], ids[3], ids[4], "gone"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
