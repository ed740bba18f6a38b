package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeClock is a settable clock for the dedup table.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestDedup(maxIDs int, resultBytes int64, log *slog.Logger) (*dedup, *fakeClock) {
	c := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := newDedup(time.Hour, maxIDs, resultBytes, log)
	d.now = c.now
	return d, c
}

func wantState(t *testing.T, d *dedup, id string, want seenState) []byte {
	t.Helper()
	got, res := d.lookup(id)
	if got != want {
		t.Fatalf("state of %s = %v, want %v", id, got, want)
	}
	return res
}

func TestDedup(t *testing.T) {
	d, clock := newTestDedup(maxCommandIDs, 1<<20, nil)
	if st, _ := d.begin("a"); st != seenNew {
		t.Fatalf("first sight: %v", st)
	}
	if st, _ := d.begin("a"); st != seenRunning {
		t.Fatalf("second sight while running: %v", st)
	}
	d.complete("a", []byte("result-a"))
	if st, res := d.begin("a"); st != seenDone || string(res) != "result-a" {
		t.Fatalf("after completion: %v %q", st, res)
	}
	clock.advance(59 * time.Minute)
	wantState(t, d, "a", seenDone)
	// The result lives an hour after completion; the id until its bucket
	// (one minute wide) is an hour old: still never executed again.
	clock.advance(90 * time.Second)
	wantState(t, d, "a", seenEvicted)
	clock.advance(time.Minute)
	wantState(t, d, "a", seenNew)
	if s := d.stats(); s.ids != 0 || s.results != 0 || s.resultBytes != 0 {
		t.Errorf("after the hour the table still holds %+v", s)
	}
}

// TestDedupKeepsIDsForTheHour: at 60 commands a second for an hour (216,000
// ids, 21 times the 10,000 entries the table used to hold), every id is
// still known at the end of the hour; results are evicted by bytes, oldest
// first, and their ids answered as seenEvicted, never seenNew.
func TestDedupKeepsIDsForTheHour(t *testing.T) {
	const budget = 1 << 20
	rate := 60
	if testing.Short() {
		rate = 20 // 72,000 ids: still seven times the old bound
	}
	total := rate * 3600
	d, clock := newTestDedup(maxCommandIDs, budget, nil)
	result := bytes.Repeat([]byte("r"), 200)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range total {
		id := fmt.Sprintf("cmd-%08d", i)
		if st, _ := d.begin(id); st != seenNew {
			t.Fatalf("%s: %v on first sight", id, st)
		}
		d.complete(id, result)
		clock.advance(time.Second / time.Duration(rate))
	}
	// The first id is almost an hour old.
	for _, i := range []int{0, 1, total / 2} {
		if st, _ := d.lookup(fmt.Sprintf("cmd-%08d", i)); st != seenEvicted {
			t.Errorf("id %d: state %v, want seenEvicted (known, result evicted)", i, st)
		}
	}
	if res := wantState(t, d, fmt.Sprintf("cmd-%08d", total-1), seenDone); !bytes.Equal(res, result) {
		t.Errorf("newest result %q", res)
	}
	s := d.stats()
	if s.ids != total || s.forgotten != 0 {
		t.Errorf("ids %d (forgotten %d), want all %d", s.ids, s.forgotten, total)
	}
	if s.resultBytes > budget {
		t.Errorf("results hold %d bytes, over the budget %d", s.resultBytes, budget)
	}
	if want := int64(total - s.results); s.evicted != want {
		t.Errorf("evicted %d, want %d", s.evicted, want)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	perID := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)-budget) / float64(total)
	t.Logf("%d ids and %d results (%d bytes): %.1f bytes of heap per id beyond the result budget", s.ids, s.results, s.resultBytes, perID)
	if perID > 32 {
		t.Errorf("%.1f bytes of heap per id, want about 16", perID)
	}
	// An hour and a minute later all is gone.
	clock.advance(61 * time.Minute)
	if s := d.stats(); s.ids != 0 || s.results != 0 {
		t.Errorf("after the hour: %+v", s)
	}
}

// TestResultStoreByteBound: the stored results stay within the budget,
// the oldest go first, and a result larger than the budget is not kept
// (its id is).
func TestResultStoreByteBound(t *testing.T) {
	const budget = 10 << 10
	d, _ := newTestDedup(maxCommandIDs, budget, nil)
	result := bytes.Repeat([]byte("x"), 1000)
	for i := range 100 {
		id := fmt.Sprint("c", i)
		d.begin(id)
		d.complete(id, result)
		if s := d.stats(); s.resultBytes > budget {
			t.Fatalf("after %d results: %d bytes stored, budget %d", i+1, s.resultBytes, budget)
		}
	}
	s := d.stats()
	if want := budget / (1000 + resultOverhead); s.results != want {
		t.Errorf("%d results stored, want %d", s.results, want)
	}
	wantState(t, d, "c0", seenEvicted)
	wantState(t, d, fmt.Sprint("c", 100-s.results), seenDone)
	wantState(t, d, fmt.Sprint("c", 99-s.results), seenEvicted)

	d.begin("huge")
	d.complete("huge", bytes.Repeat([]byte("y"), budget+1))
	wantState(t, d, "huge", seenEvicted)
	if s := d.stats(); s.resultBytes > budget {
		t.Errorf("%d bytes stored after a result over the budget", s.resultBytes)
	}
}

// TestDedupIDBound: beyond the id bound (a hostile server) the oldest ids
// are forgotten, counted and logged; the newest are kept.
func TestDedupIDBound(t *testing.T) {
	var logs bytes.Buffer
	d, clock := newTestDedup(160, 1<<20, slog.New(slog.NewJSONHandler(&logs, nil)))
	for i := range 1000 {
		id := fmt.Sprint("c", i)
		d.begin(id)
		d.complete(id, nil)
		clock.advance(time.Millisecond)
	}
	s := d.stats()
	if s.ids > 160 || s.ids < 150 {
		t.Errorf("%d ids remembered, want at most the bound 160 and nearly all of it", s.ids)
	}
	if int(s.forgotten)+s.ids != 1000 {
		t.Errorf("forgotten %d + kept %d != 1000", s.forgotten, s.ids)
	}
	wantState(t, d, "c999", seenDone)
	if !strings.Contains(logs.String(), "command ids forgotten before the hour") {
		t.Errorf("forgetting ids was not logged: %s", logs.String())
	}
}

// TestDedupLongCommand: a command that runs longer than the hour (a
// session) is still running, and its id is kept an hour after it ends.
func TestDedupLongCommand(t *testing.T) {
	d, clock := newTestDedup(maxCommandIDs, 1<<20, nil)
	d.begin("session")
	clock.advance(3 * time.Hour)
	wantState(t, d, "session", seenRunning)
	d.complete("session", []byte("done"))
	clock.advance(59 * time.Minute)
	wantState(t, d, "session", seenDone)
	clock.advance(90 * time.Second)
	wantState(t, d, "session", seenEvicted)
}

// BenchmarkDedup is the cost of one command's begin, complete and a
// lookup with an hour of ids (216,000) in the table.
func BenchmarkDedup(b *testing.B) {
	d, clock := newTestDedup(maxCommandIDs, DefaultResultStoreBytes, nil)
	result := bytes.Repeat([]byte("r"), 200)
	for i := range 216000 {
		id := fmt.Sprint("warm-", i)
		d.begin(id)
		d.complete(id, result)
		clock.advance(time.Second / 60)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprint("bench-", i)
		d.begin(id)
		d.complete(id, result)
		d.lookup(id)
		clock.advance(time.Second / 60)
		i++
	}
}
