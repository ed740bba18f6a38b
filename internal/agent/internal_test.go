package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

var discard = slog.New(slog.DiscardHandler)

func TestNodeIDFromToken(t *testing.T) {
	tests := []struct {
		name, token, want string
	}{
		// {"alg":"HS256"}.{claims}.sig: built by hand, the signature is never checked.
		{"nodeId wins", jwtOf(`{"nodeId":"n-1","sub":"s-1","id":"i-1"}`), "n-1"},
		{"sub next", jwtOf(`{"sub":"s-1","id":"i-1"}`), "s-1"},
		{"id last", jwtOf(`{"id":"i-1"}`), "i-1"},
		{"numeric id", jwtOf(`{"id":42}`), "42"},
		{"empty nodeId falls through", jwtOf(`{"nodeId":"","sub":"s-1"}`), "s-1"},
		{"no id claims", jwtOf(`{"name":"x"}`), ""},
		{"not a JWT", "opaque-token-value", ""},
		{"garbage segments", "a.b.c", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nodeIDFromToken(tc.token); got != tc.want {
				t.Errorf("nodeIDFromToken = %q, want %q", got, tc.want)
			}
		})
	}
	if got := deriveNodeID("opaque", "", "name"); got != "name" {
		t.Errorf("fallback to NODE_NAME: got %q", got)
	}
	if got := deriveNodeID("opaque", "env-id", "name"); got != "env-id" {
		t.Errorf("fallback to NODE_ID: got %q", got)
	}
}

func jwtOf(claims string) string {
	enc := func(s string) string {
		return strings.TrimRight(base64URL(s), "=")
	}
	return enc(`{"alg":"HS256","typ":"JWT"}`) + "." + enc(claims) + ".c2ln"
}

func base64URL(s string) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := []byte(s)
	var out strings.Builder
	for i := 0; i < len(b); i += 3 {
		var n uint32
		k := min(3, len(b)-i)
		for j := 0; j < 3; j++ {
			n <<= 8
			if j < k {
				n |= uint32(b[i+j])
			}
		}
		for j := 0; j < k+1; j++ {
			out.WriteByte(chars[(n>>(18-6*j))&63])
		}
	}
	return out.String()
}

// TestOutboxRemovesOnlyConfirmed: a written result stays queued until the
// server confirms it; on the next connection the unconfirmed ones are
// written again first, in order; a confirmation from an earlier connection
// changes nothing.
func TestOutboxRemovesOnlyConfirmed(t *testing.T) {
	o := newOutbox(10, 1<<20, discard, nopObserver{})
	for i := 1; i <= 3; i++ {
		o.push(fmt.Sprint("c", i), []byte(fmt.Sprint(i)))
	}
	ep := o.rewind()
	write := func(ep uint64, pos uint64) (string, bool) {
		t.Helper()
		it, ok := o.next(ep)
		if !ok {
			t.Fatal("nothing to write")
		}
		return it.commandID, o.wrote(ep, it.seq, pos)
	}
	if id, again := write(ep, 7); id != "c1" || again {
		t.Fatalf("first write %s (again %v), want c1 for the first time", id, again)
	}
	if id, _ := write(ep, 8); id != "c2" {
		t.Fatalf("second write %s, want c2", id)
	}
	o.confirm(ep, 7)
	if o.len() != 2 || o.unwritten() != 1 {
		t.Fatalf("after confirming c1: len %d, unwritten %d; want 2 and 1", o.len(), o.unwritten())
	}
	if o.holds("c1") || !o.holds("c2") || !o.holds("c3") {
		t.Errorf("holds c1 %v, c2 %v, c3 %v; want false (confirmed), true (written, not confirmed), true (unwritten)",
			o.holds("c1"), o.holds("c2"), o.holds("c3"))
	}
	// The connection dies with c2 written, not confirmed, and c3 unwritten.
	ep2 := o.rewind()
	if !o.holds("c2") {
		t.Error("after the connection ended, c2 is not to be sent again")
	}
	o.confirm(ep, 100) // a late pong of the dead connection
	if o.len() != 2 {
		t.Fatalf("a confirmation of the old connection removed results: len %d", o.len())
	}
	var got []string
	for _, pos := range []uint64{1, 2} {
		id, again := write(ep2, pos)
		got = append(got, fmt.Sprintf("%s %v", id, again))
	}
	if want := []string{"c2 true", "c3 false"}; !slices.Equal(got, want) {
		t.Errorf("after reconnect wrote %v, want %v (c2 again, then c3)", got, want)
	}
	if _, ok := o.next(ep2); ok {
		t.Error("something left to write")
	}
	o.confirm(ep2, 2)
	if o.len() != 0 || o.resends() != 1 {
		t.Errorf("len %d, resends %d; want 0 and 1", o.len(), o.resends())
	}
}

// takeAll writes and confirms everything in o and returns the ids in order.
func takeAll(o *outbox) []string {
	var got []string
	ep := o.rewind()
	pos := uint64(0)
	for it, ok := o.next(ep); ok; it, ok = o.next(ep) {
		got = append(got, it.commandID)
		pos++
		o.wrote(ep, it.seq, pos)
	}
	o.confirm(ep, pos)
	return got
}

func TestOutboxDropsOldestWhenFull(t *testing.T) {
	var depth []int
	obs := &recordingObserver{depth: &depth}
	o := newOutbox(3, 1<<20, discard, obs)
	for i := 1; i <= 5; i++ {
		o.push(fmt.Sprint("c", i), []byte("x"))
	}
	if got := takeAll(o); !slices.Equal(got, []string{"c3", "c4", "c5"}) {
		t.Errorf("kept %v, want the newest three", got)
	}
	if o.dropped != 2 {
		t.Errorf("dropped %d, want 2", o.dropped)
	}
	if max := slices.Max(depth); max != 3 {
		t.Errorf("reported depth up to %d, want at most the limit 3", max)
	}

	// The byte bound drops the oldest too, but never the newest result.
	o = newOutbox(100, 10, discard, nopObserver{})
	o.push("a", []byte("123456"))
	o.push("b", []byte("123456"))
	if it, _ := o.peek(); o.len() != 1 || it.commandID != "b" {
		t.Errorf("byte bound kept %d results, head %s; want only b", o.len(), it.commandID)
	}
	o.push("huge", make([]byte, 100))
	if o.len() != 1 {
		t.Errorf("an oversize newest result must still be kept alone; len %d", o.len())
	}
}

type recordingObserver struct {
	mu    sync.Mutex
	depth *[]int
}

func (r *recordingObserver) Connected(bool)                                              {}
func (r *recordingObserver) Reconnect()                                                  {}
func (r *recordingObserver) CommandDone(protocol.Action, protocol.Status, time.Duration) {}
func (r *recordingObserver) LogLinesStreamed(int)                                        {}
func (r *recordingObserver) RuntimeError(protocol.Action)                                {}
func (r *recordingObserver) OutboxDepth(n int) {
	r.mu.Lock()
	*r.depth = append(*r.depth, n)
	r.mu.Unlock()
}

func TestDispatcherOrderingLimitAndCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newDispatcher(ctx, 2)
	var (
		mu      sync.Mutex
		running int
		peak    int
		order   []string
		aborted []string
	)
	gate := make(chan struct{})
	mk := func(id, key string) *job {
		return &job{id: id, key: key,
			run: func(context.Context) {
				mu.Lock()
				running++
				peak = max(peak, running)
				order = append(order, id)
				mu.Unlock()
				<-gate
				mu.Lock()
				running--
				mu.Unlock()
			},
			abort: func(reason error) {
				mu.Lock()
				aborted = append(aborted, id+":"+reason.Error())
				mu.Unlock()
			},
		}
	}
	d.submit(mk("a1", "a"))
	d.submit(mk("a2", "a"))
	d.submit(mk("a3", "a"))
	d.submit(mk("b1", "b"))
	d.submit(mk("c1", "c"))
	d.submit(mk("l1", ""))
	if !d.cancel("a3", errCancelled) {
		t.Error("cancel of a queued job failed")
	}
	testsupport.WaitFor(t, "two jobs running", func() bool { mu.Lock(); defer mu.Unlock(); return running == 2 })
	mu.Lock()
	runningID := order[0]
	mu.Unlock()
	if d.cancel(runningID, errCancelled) {
		t.Errorf("cancel of the running job %s succeeded", runningID)
	}
	close(gate)
	if !d.waitIdle(5 * time.Second) {
		t.Fatal("dispatcher did not get idle")
	}
	d.wait()
	if peak != 2 {
		t.Errorf("peak concurrency %d, want the limit 2", peak)
	}
	if !slices.Equal(aborted, []string{"a3:" + errCancelled.Error()}) {
		t.Errorf("aborted %v, want only a3", aborted)
	}
	var aOrder []string
	for _, id := range order {
		if id[0] == 'a' {
			aOrder = append(aOrder, id)
		}
	}
	if !slices.Equal(aOrder, []string{"a1", "a2"}) {
		t.Errorf("lane a ran %v, want [a1 a2]", aOrder)
	}
	if len(order) != 5 {
		t.Errorf("ran %v, want 5 jobs", order)
	}
}

func TestDispatcherAbortsAfterShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	d := newDispatcher(ctx, 1)
	var mu sync.Mutex
	var got []string
	cancel()
	d.submit(&job{id: "x", key: "k",
		run:   func(context.Context) { mu.Lock(); got = append(got, "ran"); mu.Unlock() },
		abort: func(err error) { mu.Lock(); got = append(got, err.Error()); mu.Unlock() },
	})
	if !d.waitIdle(5 * time.Second) {
		t.Fatal("not idle")
	}
	d.wait()
	if !slices.Equal(got, []string{errShuttingDown.Error()}) {
		t.Errorf("got %v, want the job aborted as shutting down", got)
	}
}

// A lane goroutine whose lane ran empty takes the next lane instead of a
// new goroutine (its stack has grown already); wait ends it at once
// rather than after laneLinger.
func TestDispatcherReusesLaneGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDispatcher(t.Context(), 4)
		var goroutines []uint64
		var mu sync.Mutex
		run := func(id, key string) {
			done := make(chan struct{})
			d.submit(&job{id: id, key: key,
				run: func(context.Context) {
					mu.Lock()
					goroutines = append(goroutines, goroutineID())
					mu.Unlock()
					close(done)
				},
				abort: func(error) { t.Errorf("job %s aborted", id) },
			})
			<-done
			synctest.Wait() // the lane goroutine is back waiting for work
		}
		run("a1", "a")
		time.Sleep(laneLinger / 2)
		run("b1", "b")
		run("a2", "a")
		if len(goroutines) != 3 || goroutines[1] != goroutines[0] || goroutines[2] != goroutines[0] {
			t.Errorf("jobs ran on goroutines %v, want one reused lane goroutine", goroutines)
		}
		start := time.Now()
		if !d.waitIdle(time.Minute) {
			t.Fatal("not idle")
		}
		d.wait()
		if waited := time.Since(start); waited != 0 {
			t.Errorf("wait took %v (fake time): it waited for the lingering lane goroutine to expire", waited)
		}

		// Past laneLinger the goroutine has ended: the next lane gets a new one.
		d = newDispatcher(t.Context(), 4)
		goroutines = nil
		run("c1", "c")
		time.Sleep(laneLinger + time.Millisecond)
		synctest.Wait()
		run("c2", "c")
		if len(goroutines) != 2 || goroutines[0] == goroutines[1] {
			t.Errorf("jobs ran on goroutines %v, want a new one after laneLinger", goroutines)
		}
		d.wait()
	})
}

// After a burst of lanes at once, only as many goroutines as may run at
// once stay waiting for more: a hostile server's many containers leave
// no crowd behind.
func TestDispatcherLingersNoMoreThanTheLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit, lanes = 3, 40
		before := runtime.NumGoroutine()
		d := newDispatcher(t.Context(), limit)
		gate := make(chan struct{})
		for i := range lanes {
			d.submit(&job{id: strconv.Itoa(i), key: strconv.Itoa(i),
				run:   func(context.Context) { <-gate },
				abort: func(error) { t.Errorf("job %d aborted", i) },
			})
		}
		synctest.Wait()
		if n := runtime.NumGoroutine() - before; n != lanes {
			t.Fatalf("%d goroutines for %d lanes", n, lanes)
		}
		close(gate)
		synctest.Wait()
		if n := runtime.NumGoroutine() - before; n != limit {
			t.Errorf("%d lane goroutines wait for work after the burst, want the limit %d", n, limit)
		}
		d.wait()
		if n := runtime.NumGoroutine() - before; n != 0 {
			t.Errorf("%d goroutines left after wait", n)
		}
	})
}

// goroutineID is the running goroutine's id, from its stack header.
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(strings.TrimPrefix(string(buf), "goroutine "))
	id, _ := strconv.ParseUint(f[0], 10, 64)
	return id
}

// admit's peek reads a command's type, id, action and container as the
// decoding does (protocol.Decode, then the command), repeated keys and
// nulls included: otherwise a frame could be admitted, refused or
// recognised as a duplicate under another id or container than the one
// that runs.
func TestPeekReadsWhatDecodeReads(t *testing.T) {
	for _, frame := range []string{
		`{"type":"command","id":"x","action":"stop","containerId":"web"}`,
		`{"type":"command","id":"x","action":"stop","containerId":"web","id":null,"containerId":null,"action":null}`,
		`{"type":"command","id":"x","action":"stop","containerId":"web","id":"y","containerId":"db"}`,
		`{"type":"command","id":"x","action":"stop","containerId":"web","type":null}`,
		`{"type":"command","id":"x","action":"stop","containerId":"web","type":"ping"}`,
		`{"type":null,"type":"command","id":"x","action":"start","containerId":"w\u0065b"}`,
		`{"type":"command","id":"x","id":7,"action":"stop","containerId":"web"}`,
		`{"type":"ping","id":"p"}`,
	} {
		var head frameHead
		if err := json.Unmarshal([]byte(frame), &head); err != nil {
			t.Fatalf("peek %s: %v", frame, err)
		}
		var typ, id, action, container string
		m, err := protocol.Decode([]byte(frame))
		var de *protocol.DecodeError
		switch {
		case errors.As(err, &de):
			typ, id = de.Type, de.ID
		case err != nil:
			t.Fatalf("Decode(%s): %v", frame, err)
		default:
			typ = m.MessageType()
			if c, ok := m.(protocol.Command); ok {
				id, action, container = c.ID, string(c.Action), c.ContainerID
			}
		}
		if typ != protocol.TypeCommand {
			if head.Type == protocol.TypeCommand {
				t.Errorf("peek of %s: a command; Decode: %q", frame, typ)
			}
			continue
		}
		got := []string{string(head.Type), string(head.ID), string(head.Action), string(head.ContainerID)}
		if want := []string{typ, id, action, container}; err == nil && !slices.Equal(got, want) || err != nil && got[1] != id {
			t.Errorf("peek of %s: %q; decoded: %q (err %v)", frame, got, want, err)
		}
	}
}

func TestEncodeResultFitsOneFrame(t *testing.T) {
	a := &Agent{opts: Options{MaxMessageBytes: 4096}, log: discard}
	var lines []string
	for i := 0; i < 500; i++ {
		lines = append(lines, fmt.Sprintf("line %03d %s", i, strings.Repeat("x", 30)))
	}
	data := a.encodeResult(protocol.Success("c1", protocol.LogsResult{Logs: lines}, nil))
	if len(data) > 4096 {
		t.Fatalf("encoded %d bytes, limit 4096", len(data))
	}
	var got struct {
		Status   string
		Warnings []string
		Result   protocol.LogsResult
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	n := len(got.Result.Logs)
	if got.Status != "success" || n == 0 || got.Result.Logs[n-1] != lines[499] {
		t.Fatalf("truncated result keeps %d lines ending %q; want the latest lines", n, got.Result.Logs[n-1])
	}
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], fmt.Sprintf("the %d earliest lines", 500-n)) {
		t.Errorf("warnings %v do not say how many lines were cut", got.Warnings)
	}
	// Not a logs result: an internal error instead of an unsendable frame.
	big := a.encodeResult(protocol.Success("c2", protocol.MessageResult{Message: strings.Repeat("m", 5000)}, nil))
	if len(big) > 4096 || !strings.Contains(string(big), `"code":"internal"`) {
		t.Errorf("oversize result encoded as %.200s", big)
	}
}

func TestClip(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	c := clip(s, 5)
	if !utf8.ValidString(c) || !strings.HasSuffix(c, clipMarker) || len(c) > 5+len(clipMarker) {
		t.Errorf("clip = %q", c)
	}
	if got := clipLine("short"); got != "short" {
		t.Errorf("clipLine changed a short line: %q", got)
	}
	long := strings.Repeat("a", maxLineBytes+10)
	if got := clipLine(long); len(got) != maxLineBytes+len(clipMarker) {
		t.Errorf("clipLine length %d", len(got))
	}
}

// TestOutboxEmptyChannel: empty is closed exactly while no result waits to
// be written or confirmed, so shutdown waits on it instead of polling.
func TestOutboxEmptyChannel(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	o := newOutbox(10, 1<<20, discard, nopObserver{})
	if !closed(o.empty()) {
		t.Fatal("a new outbox is not empty")
	}
	o.push("a", []byte("1"))
	o.push("b", []byte("2"))
	wait := o.empty()
	if closed(wait) {
		t.Fatal("empty with two results queued")
	}
	ep := o.rewind()
	for pos := uint64(1); pos <= 2; pos++ {
		it, _ := o.next(ep)
		o.wrote(ep, it.seq, pos)
	}
	o.confirm(ep, 1)
	if closed(wait) {
		t.Fatal("empty with one result unconfirmed")
	}
	o.confirm(ep, 2)
	if !closed(wait) {
		t.Fatal("not empty once every result was confirmed")
	}
	o.push("c", []byte("3"))
	if closed(o.empty()) {
		t.Fatal("empty after a new push")
	}
	it, _ := o.next(ep)
	o.remove(ep, it.seq) // too large to send
	if !closed(o.empty()) {
		t.Fatal("not empty once the last result was removed")
	}
}
