package docker

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
	"github.com/lormas/lormas-agent/internal/testsupport"
)

// TestFollowLogsThroughRotation floods a container whose log files are
// 1 MB, two of them: Docker's follower falls behind the rotation, skips
// files, reads a file again from its start (20.10 takes a rotated file for
// a truncated one) and ends its stream early when the container exits
// while it lags. The stream must go on until the container exits, never
// repeat a line or change their order, and end with the container's last
// line (read from what the engine still holds once it stopped). The lines
// Docker rotated away before its follower read them are lost to every
// reader of the engine; the agent cannot count them.
func TestFollowLogsThroughRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("a Docker flood: not in the -short tier")
	}
	logs := &testsupport.Buffer{}
	it := newIT(t, func(o *Options) {
		o.LogMaxSize, o.LogMaxFile = "1m", 2
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const n = 200000
	name := it.run("rotate", false, "-delay", "1s", "-flood", "-lines", fmt.Sprint(n), "-pad", "100", "-exit", "0")
	prev, got, skipped := 0, 0, 0
	var last []string
	err := it.eng.FollowLogs(it.ctx, logsOf(t, &protocol.Command{ContainerID: name, Follow: true, Timestamps: true}), func(_, line string) error {
		var i int
		var stamp string
		if _, err := fmt.Sscanf(line, "%s flood line %d", &stamp, &i); err != nil {
			return fmt.Errorf("line %.40q: %w", line, err)
		}
		last = append(last, fmt.Sprint(stamp, " ", i))
		if len(last) > 5 {
			last = last[1:]
		}
		if i <= prev {
			t.Logf("engine log:\n%s", logs.String())
			return fmt.Errorf("line %d after line %d: repeated or out of order; last lines %q", i, prev, last)
		}
		skipped += i - prev - 1
		prev = i
		got++
		return nil
	})
	if err != nil {
		t.Fatalf("FollowLogs: %v", err)
	}
	if st := it.inspect(name).State; st.Running {
		t.Error("FollowLogs ended while the container runs")
	}
	if prev != n {
		t.Errorf("the last line followed is %d, want %d", prev, n)
	}
	t.Logf("%d of %d lines followed; %d rotated away before Docker's follower read them; "+
		"the follower went back %d times; %d engine streams resumed",
		got, n, skipped, strings.Count(logs.String(), "log stream went back"), strings.Count(logs.String(), "log stream resumed"))
}

// TestFollowLogsAcrossRealRestart follows a TTY container that is
// restarted: the stream carries on with the new run's lines (told apart by
// the run stamp), repeats none, and ends only when the container is
// stopped for good.
func TestFollowLogsAcrossRealRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker: not in the -short tier")
	}
	it := newIT(t)
	name := it.run("restart", true, "-lines", "100000", "-interval", "20ms", "-run-stamp")
	type line struct {
		run string
		n   int
	}
	var mu sync.Mutex
	var got []line
	runs := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		m := map[string]int{}
		for _, l := range got {
			m[l.run]++
		}
		return m
	}
	done := make(chan error, 1)
	go func() {
		done <- it.eng.FollowLogs(it.ctx, logsOf(t, &protocol.Command{ContainerID: name, Follow: true}), func(_, text string) error {
			var run string
			var n int
			if _, err := fmt.Sscanf(text, "run %s stdout line %d", &run, &n); err != nil {
				return fmt.Errorf("line %q: %w", text, err)
			}
			mu.Lock()
			got = append(got, line{run, n})
			mu.Unlock()
			return nil
		})
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case err := <-done:
				t.Fatalf("FollowLogs ended (%v) while waiting for %s", err, what)
			case <-it.ctx.Done():
				t.Fatalf("waiting for %s", what)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("lines of the first run", func() bool { r := runs(); return len(r) == 1 && sum(r) >= 10 })
	if err := it.eng.Restart(it.ctx, name, intp(1)); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	waitFor("lines of the second run", func() bool { r := runs(); return len(r) == 2 && min2(r) >= 10 })
	if err := it.eng.Stop(it.ctx, name, intp(1)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("FollowLogs: %v", err)
		}
	case <-it.ctx.Done():
		t.Fatal("FollowLogs did not end after the container stopped")
	}
	perRun := runs()
	mu.Lock()
	defer mu.Unlock()
	next := map[string]int{}
	var order []string
	for _, l := range got {
		if _, seen := next[l.run]; !seen {
			order = append(order, l.run)
			next[l.run] = 1
		}
		if l.run != order[len(order)-1] {
			t.Fatalf("a line of run %s after run %s began", l.run, order[len(order)-1])
		}
		if l.n != next[l.run] {
			t.Fatalf("run %s: line %d where %d was due", l.run, l.n, next[l.run])
		}
		next[l.run]++
	}
	if len(order) != 2 {
		t.Errorf("runs followed %q, want two", order)
	}
	t.Logf("followed %d lines across a restart: %v", len(got), perRun)
}

func sum(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

func min2(m map[string]int) int {
	s := -1
	for _, v := range m {
		if s < 0 || v < s {
			s = v
		}
	}
	return s
}
