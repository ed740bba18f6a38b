package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// drain takes everything from b (closed first) and returns the line
// numbers and gaps in order, gaps as negative numbers.
func drain(t *testing.T, b *logBuffer) []int {
	t.Helper()
	b.close()
	var out []int
	for {
		tk, ok := b.next(context.Background(), maxBatchLines, maxBatchBytes)
		if !ok {
			return out
		}
		if tk.gap > 0 {
			out = append(out, -tk.gap)
			continue
		}
		for _, l := range tk.lines {
			n, err := strconv.Atoi(strings.Fields(l)[0])
			if err != nil {
				t.Fatalf("line %q", l)
			}
			out = append(out, n)
		}
	}
}

func numberedLine(i int) string { return fmt.Sprintf("%d %s", i, strings.Repeat("p", 90)) }

func TestLogBufferKeepsNewestWithinBytes(t *testing.T) {
	const limit = 64 << 10
	budget := &logBudget{max: 1 << 30}
	b := newLogBuffer(limit, budget)
	for i := range 10000 {
		if !b.push("stdout", numberedLine(i), time.Now()) {
			t.Fatal("push refused on an open buffer")
		}
		if b.held > limit {
			t.Fatalf("after %d lines the buffer holds %d bytes, limit %d", i+1, b.held, limit)
		}
	}
	if budget.used.Load() != int64(b.held) {
		t.Errorf("budget used %d, buffer holds %d", budget.used.Load(), b.held)
	}
	got := drain(t, b)
	if len(got) < 2 || got[0] >= 0 {
		t.Fatalf("got %v, want a gap first", got[:min(len(got), 5)])
	}
	// One gap for the oldest lines, then the newest lines in order, the
	// last one included.
	next := -got[0]
	for _, n := range got[1:] {
		if n != next {
			t.Fatalf("line %d where %d was due", n, next)
		}
		next++
	}
	if next != 10000 {
		t.Errorf("lines up to %d, want up to 9999", next-1)
	}
	pushed, dropped := b.counts()
	if pushed != 10000 || dropped != -got[0] {
		t.Errorf("counts %d pushed, %d dropped; want 10000 and the gap %d", pushed, dropped, -got[0])
	}
	kept := len(got) - 1
	if kept*100 > limit || kept*100 < limit/2 {
		t.Errorf("%d lines kept of ~100 bytes in a %d-byte buffer", kept, limit)
	}
}

// TestLogBufferGapsInPlace: lines dropped between two takes are reported
// as one gap where they were, before the lines that follow them.
func TestLogBufferGapsInPlace(t *testing.T) {
	b := newLogBuffer(64<<10, &logBudget{max: 1 << 30})
	var got []int
	i := 0
	for round := range 20 {
		for range 200 * (round%3 + 1) { // some rounds overflow the buffer
			b.push("stdout", numberedLine(i), time.Now())
			i++
		}
		tk, ok := b.next(context.Background(), 100, maxBatchBytes)
		if !ok {
			t.Fatal("nothing to take")
		}
		if tk.gap > 0 {
			got = append(got, -tk.gap)
			continue
		}
		for _, l := range tk.lines {
			n, _ := strconv.Atoi(strings.Fields(l)[0])
			got = append(got, n)
		}
	}
	got = append(got, drain(t, b)...)
	next, gaps := 0, 0
	for _, n := range got {
		if n < 0 {
			next -= n
			gaps++
			continue
		}
		if n != next {
			t.Fatalf("line %d where %d was due: %v", n, next, got)
		}
		next++
	}
	if next != i || gaps == 0 {
		t.Errorf("accounted for %d of %d lines with %d gaps", next, i, gaps)
	}
}

// TestLogBudgetBoundsAllStreams: a server that opens many streams on
// flooding containers cannot make the agent hold LOG_STREAM_BUFFER per
// stream: all together stay within the budget (plus one chunk each, so
// that every stream moves).
func TestLogBudgetBoundsAllStreams(t *testing.T) {
	const per, streams = 1 << 20, 16
	budget := &logBudget{max: 4 << 20}
	var wg sync.WaitGroup
	bufs := make([]*logBuffer, streams)
	for s := range streams {
		bufs[s] = newLogBuffer(per, budget)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30000 {
				bufs[s].push("stdout", numberedLine(i), time.Now())
			}
		}()
	}
	wg.Wait()
	held := 0
	for _, b := range bufs {
		held += b.held
		if got := drain(t, b); len(got) == 0 || got[len(got)-1] != 29999 {
			t.Errorf("a stream lost its newest line: %v", got[max(0, len(got)-3):])
		}
	}
	limit := int(budget.max) + streams*maxLogChunk
	if held > limit {
		t.Errorf("streams hold %d bytes together, want at most %d", held, limit)
	}
	t.Logf("%d streams x 3 MB of lines: %d bytes held (budget %d)", streams, held, budget.max)
}

func TestLogBufferStreamsAndLongLines(t *testing.T) {
	take := func(b *logBuffer) []string {
		b.close()
		var got []string
		for {
			tk, ok := b.next(context.Background(), maxBatchLines, maxBatchBytes)
			if !ok {
				return got
			}
			if tk.gap > 0 {
				got = append(got, fmt.Sprint("gap ", tk.gap, " ", tk.stream))
				continue
			}
			got = append(got, fmt.Sprint(tk.stream, " ", len(tk.lines), " ", len(strings.Join(tk.lines, ""))))
		}
	}
	long := strings.Repeat("L", 40<<10) // ten regular chunks of a 64 KiB buffer
	b := newLogBuffer(64<<10, &logBudget{max: 1 << 30})
	b.push("stdout", "a", time.Now())
	b.push("stderr", "b", time.Now())
	b.push("stderr", long, time.Now())
	b.push("stdout", "c", time.Now())
	// One batch never mixes streams; a line longer than a chunk is kept
	// whole.
	want := []string{"stdout 1 1", fmt.Sprint("stderr 2 ", 1+len(long)), "stdout 1 1"}
	if got := take(b); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("took %q, want %q", got, want)
	}

	b = newLogBuffer(64<<10, &logBudget{max: 1 << 30})
	b.push("stdout", "a", time.Now())
	b.push("stderr", "b", time.Now())
	b.push("stderr", long, time.Now())
	b.push("stdout", "c", time.Now())
	b.push("stdout", long, time.Now())
	// The second long line does not fit beside the first: the oldest go,
	// a, b and the first long line, counted from a's stream.
	want = []string{"gap 3 stdout", fmt.Sprint("stdout 2 ", 1+len(long))}
	if got := take(b); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("took %q, want %q", got, want)
	}
	if n := b.discard(); n != 0 || b.held != 0 || b.budget.used.Load() != 0 {
		t.Errorf("after the end: %d lines discarded, %d bytes held, budget %d; want none", n, b.held, b.budget.used.Load())
	}
}

func TestLogBufferDiscardAndClosed(t *testing.T) {
	budget := &logBudget{max: 1 << 30}
	b := newLogBuffer(1<<20, budget)
	for i := range 1000 {
		b.push("stdout", numberedLine(i), time.Now())
	}
	if n := b.discard(); n != 1000 {
		t.Errorf("discard dropped %d, want 1000", n)
	}
	if b.push("stdout", "late", time.Now()) {
		t.Error("push after discard accepted a line nobody will send")
	}
	if pushed, dropped := b.counts(); pushed != 1000 || dropped != 1000 {
		t.Errorf("counts %d/%d, want 1000/1000", pushed, dropped)
	}
	if budget.used.Load() != 0 {
		t.Errorf("budget still holds %d bytes after discard", budget.used.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := newLogBuffer(1<<20, budget).next(ctx, 1, 1); ok {
		t.Error("next on an empty buffer with an ended context returned something")
	}
}

// BenchmarkLogBuffer measures a push and its take, 100-byte lines.
func BenchmarkLogBuffer(b *testing.B) {
	buf := newLogBuffer(DefaultLogStreamBuffer, &logBudget{max: 1 << 30})
	line := numberedLine(1)
	now := time.Now()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		buf.push("stdout", line, now)
		if i++; i%maxBatchLines == 0 {
			buf.mu.Lock()
			buf.take(maxBatchLines, maxBatchBytes)
			buf.mu.Unlock()
		}
	}
}
