package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/logging"
	"github.com/lormas/lormas-agent/internal/protocol"
)

func wantRefusal(t *testing.T, err error, reason string, code protocol.Code, words ...string) {
	t.Helper()
	var r *refusal
	if !errors.As(err, &r) {
		t.Fatalf("error %v, want a refusal (%s)", err, reason)
	}
	if r.reason != reason {
		t.Errorf("reason %q, want %q (%v)", r.reason, reason, err)
	}
	if got := protocol.CodeOf(err); got != code {
		t.Errorf("code %q, want %q", got, code)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func wantUsage(t *testing.T, b *pendingBudget, key string, bytes int64, n int) {
	t.Helper()
	if gotB, gotN := b.usage(key); gotB != bytes || gotN != n {
		t.Errorf("usage(%q) = %d bytes, %d commands; want %d, %d", key, gotB, gotN, bytes, n)
	}
}

func TestPendingBudgetBytesPerContainerAndNode(t *testing.T) {
	b := newPendingBudget(pendingLimits{bytes: 1000, shareBytes: 400, count: 100, shareCount: 10})

	a1, err := b.reserve("a", 300)
	if err != nil {
		t.Fatal(err)
	}
	// Container a's share is 400: 300 + 200 does not fit, in a's queue only.
	_, err = b.reserve("a", 200)
	wantRefusal(t, err, RefusedContainerBytes, protocol.CodeUnavailable, `container "a"`, "full", "retry")
	bRsv, err := b.reserve("b", 400)
	if err != nil {
		t.Fatalf("container b refused while only a is full: %v", err)
	}
	if _, err := b.reserve("", 250); err != nil { // list: no container, node total only
		t.Fatalf("command without container refused: %v", err)
	}
	wantUsage(t, b, "", 950, 3)
	// The node total (1000) is full for everyone now.
	_, err = b.reserve("c", 100)
	wantRefusal(t, err, RefusedNodeBytes, protocol.CodeUnavailable, "node's command queue is full", "MAX_PENDING_BYTES", "retry")
	// Larger than a container's share: can never fit.
	_, err = b.reserve("d", 401)
	wantRefusal(t, err, RefusedTooLarge, protocol.CodeInvalid, "too large", "MAX_PENDING_BYTES")

	// Resize: shrinking frees room, growing past the share is refused and
	// leaves the reservation as it was.
	if err := a1.resize(100); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, b, "a", 100, 1)
	err = bRsv.resize(450)
	wantRefusal(t, err, RefusedTooLarge, protocol.CodeInvalid)
	wantUsage(t, b, "b", 400, 1)
	a2, err := b.reserve("a", 200)
	if err != nil {
		t.Fatalf("after shrinking: %v", err)
	}
	err = a2.resize(350)
	wantRefusal(t, err, RefusedContainerBytes, protocol.CodeUnavailable, "this one needs 350 B")
	wantUsage(t, b, "a", 300, 2)

	// Release is idempotent and frees everything.
	a1.release()
	a1.release()
	a2.release()
	bRsv.release()
	wantUsage(t, b, "a", 0, 0)
	wantUsage(t, b, "", 250, 1)
	if len(b.keys) != 0 {
		t.Errorf("per-container entries left after release: %v", b.keys)
	}
	var nilRsv *reservation
	nilRsv.release() // safe
}

func TestPendingBudgetCounts(t *testing.T) {
	b := newPendingBudget(pendingLimits{bytes: 1 << 20, shareBytes: 1 << 18, count: 5, shareCount: 3})
	var held []*reservation
	for range 3 {
		r, err := b.reserve("a", 1)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	_, err := b.reserve("a", 1)
	wantRefusal(t, err, RefusedContainerCommands, protocol.CodeUnavailable, `container "a"`, "3 commands", "retry")
	for range 2 {
		if _, err := b.reserve("b", 1); err != nil {
			t.Fatal(err)
		}
	}
	_, err = b.reserve("c", 1)
	wantRefusal(t, err, RefusedNodeCommands, protocol.CodeUnavailable, "5 commands", "retry")
	held[0].release()
	if _, err := b.reserve("a", 1); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

func TestDefaultPendingLimits(t *testing.T) {
	lim := newPendingLimits(DefaultMaxPendingBytes)
	if lim.bytes != 64<<20 || lim.shareBytes != 16<<20 || lim.count != maxPending || lim.shareCount != maxPendingPerContainer {
		t.Errorf("default limits %+v", lim)
	}
}

func TestShedKeepsOnlyWhatTheActionUses(t *testing.T) {
	full := func(a protocol.Action) *protocol.Command {
		return &protocol.Command{Action: a, ContainerID: "c", EggConfig: &protocol.EggConfig{Image: "x"},
			Resources: &protocol.Resources{CPU: 1}, Environment: map[string]string{"A": "b"}, Lines: new(int)}
	}
	c := full(protocol.ActionCreate)
	shed(c)
	if c.EggConfig == nil || c.Environment == nil || c.Resources == nil {
		t.Errorf("create lost fields: %+v", c)
	}
	c = full(protocol.ActionUpdate)
	shed(c)
	if c.Resources == nil || c.EggConfig != nil || c.Environment != nil {
		t.Errorf("update kept %+v", c)
	}
	for _, a := range []protocol.Action{protocol.ActionStop, protocol.ActionStart, protocol.ActionLogs, protocol.ActionDelete} {
		c = full(a)
		shed(c)
		if c.Resources != nil || c.EggConfig != nil || c.Environment != nil || c.Lines == nil {
			t.Errorf("%s kept %+v", a, c)
		}
	}
}

// costFrames are command frames of about 256 KiB in the shapes that cost the
// most once decoded, relative to their size on the wire.
func costFrames() map[string]string {
	const size = 256 << 10
	build := func(prefix, suffix string, item func(i int) string) string {
		var b strings.Builder
		b.WriteString(prefix)
		for i := 0; b.Len() < size; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(item(i))
		}
		b.WriteString(suffix)
		return b.String()
	}
	head := `{"type":"command","id":"x","action":"create","containerId":"c","eggConfig":{"image":"img"`
	value := strings.Repeat("v", 72)
	return map[string]string{
		"tiny env entries": build(head+`},"environment":{`, `}}`, func(i int) string { return fmt.Sprintf(`"%x":""`, i) }),
		"ordinary env":     build(head+`},"environment":{`, `}}`, func(i int) string { return fmt.Sprintf(`"LORMAS_VAR_%05d":"%s"`, i, value) }),
		"one huge value":   head + `},"environment":{"A":"` + strings.Repeat("x", size) + `"}}`,
		"tiny labels":      build(head+`,"labels":{`, `}}}`, func(i int) string { return fmt.Sprintf(`"%x":"a"`, i) }),
		"empty args":       build(head+`,"command":[`, `]}}`, func(int) string { return `""` }),
		"ports":            build(head+`,"ports":[`, `]}}`, func(int) string { return `{"container":1}` }),
		"empty ports":      build(head+`,"ports":[`, `]}}`, func(int) string { return `{}` }),
		"volumes":          build(head+`,"volumes":[`, `]}}`, func(int) string { return `{"host":"v","container":"/"}` }),
		"empty volumes":    build(head+`,"volumes":[`, `]}}`, func(int) string { return `{}` }),
	}
}

// TestCommandCostCoversDecodedHeap measures the heap that decoded commands
// really hold and checks that commandCost never counts less (the pending
// bound would then be exceeded), nor grossly more (good commands would be
// refused).
func TestCommandCostCoversDecodedHeap(t *testing.T) {
	for name, frame := range costFrames() {
		t.Run(name, func(t *testing.T) {
			const n = 8
			cmds := make([]*protocol.Command, n)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range cmds {
				var c protocol.Command
				if err := json.Unmarshal([]byte(frame), &c); err != nil {
					t.Fatal(err)
				}
				cmds[i] = &c
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			held := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			cost := commandCost(cmds[0])
			t.Logf("frame %d bytes: decoded heap %d, estimate %d (%.2fx the frame)", len(frame), held, cost, float64(cost)/float64(len(frame)))
			if cost < held {
				t.Errorf("estimate %d is below the measured heap %d", cost, held)
			}
			if cost > 3*held+jobOverhead {
				t.Errorf("estimate %d is more than 3x the measured heap %d", cost, held)
			}
			runtime.KeepAlive(cmds)
		})
	}
}

// TestAdmitDoesNotDecodeTheBody: refusing a large command costs a few small
// allocations, not the decoding of its environment.
func TestAdmitDoesNotDecodeTheBody(t *testing.T) {
	a := &Agent{
		opts:      Options{MaxMessageBytes: 1 << 20},
		log:       discard,
		pending:   newPendingBudget(pendingLimits{bytes: 8 << 20, shareBytes: 2 << 20, count: 10, shareCount: 10}),
		seen:      newDedup(dedupTTL, 10, 1<<20, nil),
		obs:       observer{nopObserver{}},
		outbox:    newOutbox(10, 1<<20, discard, nopObserver{}),
		refuseLog: logging.Every(0),
	}
	if _, err := a.pending.reserve("c", 7<<18); err != nil { // container c's queue: 1.75 of 2 MiB
		t.Fatal(err)
	}
	frame := []byte(costFrames()["tiny env entries"])
	allocs := testing.AllocsPerRun(5, func() {
		if _, _, ok := a.admit(frame); ok {
			t.Fatal("admitted into an empty budget")
		}
	})
	if allocs > 100 {
		t.Errorf("%v allocations to refuse one command: the body was decoded", allocs)
	}
	it, ok := a.outbox.peek()
	if !ok {
		t.Fatal("no result queued for the refused command")
	}
	var res protocol.CommandResult
	if err := json.Unmarshal(it.data, &res); err != nil {
		t.Fatal(err)
	}
	if res.CommandID != "x" || res.Code != protocol.CodeUnavailable || !strings.Contains(res.Error, `container "c" is full`) {
		t.Errorf("result %+v", res)
	}
}

func TestMemoryLimitFromTheBounds(t *testing.T) {
	a := &Agent{opts: Options{MaxPendingBytes: DefaultMaxPendingBytes, MaxMessageBytes: DefaultMaxMessageBytes}}
	if got := a.MemoryLimit(); got != 272<<20 {
		t.Errorf("default memory limit %d MiB, want 272", got>>20)
	}
	a.opts.MaxPendingBytes = 1 << 30
	if got := a.MemoryLimit(); got != (1<<30)+208<<20 {
		t.Errorf("memory limit with MAX_PENDING_BYTES=1g: %d MiB, want it to grow with the bound", got>>20)
	}
}

// BenchmarkRefuseLargeCommand: the cost of answering a 700 KB command for a
// full queue (the peek scans the frame; nothing of its body is decoded).
func BenchmarkRefuseLargeCommand(b *testing.B) {
	a := &Agent{
		opts:      Options{MaxMessageBytes: 1 << 20},
		log:       discard,
		pending:   newPendingBudget(pendingLimits{bytes: 8 << 20, shareBytes: 2 << 20, count: 10, shareCount: 10}),
		seen:      newDedup(dedupTTL, 10, 1<<20, nil),
		obs:       observer{nopObserver{}},
		outbox:    newOutbox(10, 1<<20, discard, nopObserver{}),
		refuseLog: logging.Every(time.Hour),
	}
	if _, err := a.pending.reserve("c", 2<<20); err != nil {
		b.Fatal(err)
	}
	var env strings.Builder
	for i := 0; env.Len() < 700<<10; i++ {
		fmt.Fprintf(&env, `,"LORMAS_VAR_%05d":"%s"`, i, strings.Repeat("v", 72))
	}
	frame := []byte(`{"type":"command","id":"x","action":"create","containerId":"c","eggConfig":{"image":"img"},"environment":{` + env.String()[1:] + `}}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := a.admit(frame); ok {
			b.Fatal("admitted")
		}
	}
}
