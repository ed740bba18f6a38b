package testsupport

import (
	"testing"
	"time"
)

// WaitLimit bounds WaitFor and CheckLeaks: a safety net for a machine
// loaded by other tests, never a measurement. A passing test does not wait
// for it.
const WaitLimit = 20 * time.Second

// WaitFor waits until cond holds and fails the test (naming what) when it
// still does not after WaitLimit. For a condition that no channel announces:
// it checks cond again after 1 ms, then at growing intervals up to 20 ms.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !poll(WaitLimit, cond) {
		t.Fatalf("timed out after %v waiting for %s", WaitLimit, what)
	}
}

// Eventually waits until f returns nil and fails the test with f's last
// error when it does not within limit.
func Eventually(t testing.TB, limit time.Duration, f func() error) {
	t.Helper()
	var err error
	if !poll(limit, func() bool { err = f(); return err == nil }) {
		t.Fatalf("after %v: %v", limit, err)
	}
}

// poll checks cond until it holds (true) or limit passes (false).
func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	pause := time.Millisecond
	t := time.NewTimer(pause)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-t.C
		pause = min(2*pause, 20*time.Millisecond)
		t.Reset(pause)
	}
	return true
}
