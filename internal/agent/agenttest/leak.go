package agenttest

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakMarkers identify goroutines that belong to the agent's packages or
// to gws; any left when a test ends is a leak.
var leakMarkers = []string{"github.com/lormas/lormas-agent/internal/", "github.com/lxzan/gws."}

// CheckLeaks fails the test if, once it and all its cleanups have finished,
// goroutines of the agent's packages or of gws are still running after a
// grace period. Call it first in a test, so its check runs last. Tests that
// use it must not run in parallel.
func CheckLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked := leakedGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 { // the calling goroutine
			continue
		}
		s := string(g)
		if lines := strings.SplitN(s, "\n", 3); len(lines) > 1 && strings.HasPrefix(lines[1], "testing.") {
			continue // a parent test waiting in t.Run for its subtests
		}
		for _, m := range leakMarkers {
			if strings.Contains(s, m) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}
