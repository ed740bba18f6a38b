package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

// maxRand always draws the top of the range, so Next returns the ceiling.
func maxRand(n int64) int64 { return n - 1 }

func TestCeilingDoublesToCap(t *testing.T) {
	tests := []struct {
		name      string
		base, max time.Duration
		want      []time.Duration
	}{
		{"defaults of docs/protocol.md", time.Second, 60 * time.Second,
			[]time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}},
		{"cap equal to base", time.Second, time.Second,
			[]time.Duration{1, 1, 1}},
		{"cap below base", 2 * time.Second, time.Second,
			[]time.Duration{2, 2}},
		{"cap not a power of two", time.Second, 5 * time.Second,
			[]time.Duration{1, 2, 4, 5, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.base, tc.max, WithRand(maxRand))
			for i, w := range tc.want {
				want := w * time.Second
				if got := b.Next(); got != want {
					t.Fatalf("attempt %d: got %v, want %v", i, got, want)
				}
			}
			if got := b.Attempt(); got != len(tc.want) {
				t.Errorf("Attempt() = %d, want %d", got, len(tc.want))
			}
		})
	}
}

func TestCeilingDoesNotOverflow(t *testing.T) {
	b := New(time.Second, 1<<62, WithRand(maxRand))
	for i := 0; i < 200; i++ {
		d := b.Next()
		if d <= 0 || d > 1<<62 {
			t.Fatalf("attempt %d: delay %v outside (0, cap]", i, d)
		}
	}
}

func TestFullJitterRange(t *testing.T) {
	var asked []int64
	draws := []int64{0, 1, 0}
	b := New(100*time.Millisecond, time.Second, WithRand(func(n int64) int64 {
		asked = append(asked, n)
		return draws[len(asked)-1]
	}))
	got := []time.Duration{b.Next(), b.Next(), b.Next()}
	want := []time.Duration{0, 1, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("draw %d: got %v, want %v", i, got[i], want[i])
		}
	}
	// The random source is asked for [0, ceiling]: n = ceiling+1.
	wantN := []int64{int64(100*time.Millisecond) + 1, int64(200*time.Millisecond) + 1, int64(400*time.Millisecond) + 1}
	for i := range wantN {
		if asked[i] != wantN[i] {
			t.Errorf("range %d: got n=%d, want %d", i, asked[i], wantN[i])
		}
	}
}

func TestDefaultRandStaysInRange(t *testing.T) {
	b := New(time.Millisecond, 8*time.Millisecond)
	for i := 0; i < 1000; i++ {
		ceil := b.Ceiling()
		if d := b.Next(); d < 0 || d > ceil {
			t.Fatalf("attempt %d: delay %v outside [0, %v]", i, d, ceil)
		}
	}
}

func TestResetOnlyAfterStablePeriod(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		connect   bool
		up        time.Duration
		wantReset bool
		wantCeil  time.Duration
	}{
		{"closed at once", true, 0, false, 8 * time.Second},
		{"closed after 9.9s", true, 9900 * time.Millisecond, false, 8 * time.Second},
		{"stayed up 10s", true, 10 * time.Second, true, time.Second},
		{"stayed up an hour", true, time.Hour, true, time.Second},
		{"never connected", false, time.Hour, false, 8 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(time.Second, time.Minute, WithRand(maxRand))
			b.Next()
			b.Next()
			b.Next() // ceiling now 8s
			if tc.connect {
				b.MarkConnected(t0)
			}
			if got := b.MarkDisconnected(t0.Add(tc.up)); got != tc.wantReset {
				t.Errorf("MarkDisconnected = %v, want %v", got, tc.wantReset)
			}
			if got := b.Ceiling(); got != tc.wantCeil {
				t.Errorf("Ceiling after disconnect = %v, want %v", got, tc.wantCeil)
			}
		})
	}
}

func TestStableAfterOption(t *testing.T) {
	t0 := time.Now()
	b := New(time.Second, time.Minute, WithStableAfter(time.Second))
	b.Next()
	b.MarkConnected(t0)
	if !b.MarkDisconnected(t0.Add(time.Second)) {
		t.Fatal("connection up for the stable period did not reset the backoff")
	}
	if b.Attempt() != 0 {
		t.Errorf("Attempt() = %d after reset, want 0", b.Attempt())
	}
	// A second disconnect without a new connect does not reset again.
	b.Next()
	if b.MarkDisconnected(t0.Add(time.Hour)) {
		t.Error("disconnect without a connect reset the backoff")
	}
}

func TestNonPositiveBase(t *testing.T) {
	b := New(0, 0, WithRand(maxRand))
	if got := b.Next(); got != time.Second {
		t.Errorf("Next with zero base = %v, want 1s", got)
	}
}

// stepClock is a Clock whose waits the test ends one by one: each After
// reports the delay asked for on waits and returns fire.
type stepClock struct {
	waits chan time.Duration
	fire  chan time.Time
}

func newStepClock() *stepClock {
	return &stepClock{waits: make(chan time.Duration, 1), fire: make(chan time.Time)}
}

func (c *stepClock) Now() time.Time { return time.Time{} }

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.waits <- d
	return c.fire
}

func TestWaitWaitsEachDelayOnTheClock(t *testing.T) {
	clock := newStepClock()
	b := New(time.Second, 4*time.Second, WithRand(maxRand), WithClock(clock))
	done := make(chan error)
	go func() {
		for range 4 {
			if err := b.Wait(context.Background()); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if got := <-clock.waits; got != want {
			t.Fatalf("wait %d: got %v, want %v", i, got, want)
		}
		select {
		case err := <-done:
			t.Fatalf("wait %d returned %v before its time passed", i, err)
		default:
		}
		clock.fire <- time.Time{}
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if got := b.Attempt(); got != 4 {
		t.Errorf("Attempt() = %d, want 4", got)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	clock := newStepClock()
	b := New(time.Hour, time.Hour, WithClock(clock))
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error)
	go func() { done <- b.Wait(ctx) }()
	<-clock.waits
	cancel(errors.New("shutting down"))
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
	}
	// A context that has ended already does not wait at all.
	if err := b.WaitFor(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor on an ended context = %v, want context.Canceled", err)
	}
	select {
	case d := <-clock.waits:
		t.Fatalf("WaitFor on an ended context asked the clock for %v", d)
	default:
	}
}

func TestConstantAndWithoutJitter(t *testing.T) {
	c := Constant(100 * time.Millisecond)
	for i := range 5 {
		if got := c.Next(); got != 100*time.Millisecond {
			t.Fatalf("Constant draw %d: got %v, want 100ms", i, got)
		}
	}
	d := New(50*time.Millisecond, 2*time.Second, WithoutJitter())
	want := []time.Duration{50, 100, 200, 400, 800, 1600, 2000, 2000}
	for i, w := range want {
		if got := d.Next(); got != w*time.Millisecond {
			t.Fatalf("doubling draw %d: got %v, want %v", i, got, w*time.Millisecond)
		}
	}
}
