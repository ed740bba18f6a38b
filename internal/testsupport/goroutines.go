package testsupport

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// leakMarkers identify the goroutines CheckLeaks looks for: this module's
// and gws's.
var leakMarkers = []string{"github.com/lormas/lormas-agent/internal/", "github.com/lxzan/gws."}

// CheckLeaks fails the test if, once it and all its cleanups have finished,
// goroutines of this module's packages or of gws are still running after
// WaitLimit. Call it first in a test, so its check runs last. Tests that
// use it must not run in parallel.
func CheckLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		var leaked []string
		if !poll(WaitLimit, func() bool { leaked = Goroutines(leakMarkers...); return len(leaked) == 0 }) {
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// Goroutines returns the stacks of the goroutines whose stack contains
// any of markers (a package path, a function name), other than the
// caller's and those of parent tests waiting for their subtests.
func Goroutines(markers ...string) []string {
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
		for _, m := range markers {
			if strings.Contains(s, m) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}
