package testsupport

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fatalT records a Fatalf instead of ending the test.
type fatalT struct {
	testing.TB
	failed string
}

func (f *fatalT) Helper() {}
func (f *fatalT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestWaitFor(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	WaitFor(t, "three", func() bool { return n.Load() == 3 })
}

func TestEventuallyReportsTheLastError(t *testing.T) {
	ft := &fatalT{TB: t}
	calls := 0
	Eventually(ft, 30*time.Millisecond, func() error {
		calls++
		return fmt.Errorf("attempt %d", calls)
	})
	if want := fmt.Sprintf("attempt %d", calls); calls < 2 || !strings.HasSuffix(ft.failed, want) {
		t.Errorf("after %d calls failed with %q, want it to end in %q", calls, ft.failed, want)
	}
	ft = &fatalT{TB: t}
	Eventually(ft, time.Second, func() error { return nil })
	if ft.failed != "" {
		t.Errorf("a nil error failed the test: %s", ft.failed)
	}
}

func TestFreeAddrCanBeListenedOn(t *testing.T) {
	addr := FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	ln.Close()
}

func parked(stop <-chan struct{}) { <-stop }

func TestGoroutines(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		parked(stop)
	}()
	WaitFor(t, "the parked goroutine", func() bool { return len(Goroutines("testsupport.parked")) == 1 })
	close(stop)
	<-done
	WaitFor(t, "the parked goroutine to end", func() bool { return len(Goroutines("testsupport.parked")) == 0 })
	if got := Goroutines("testsupport.TestGoroutines"); len(got) != 0 {
		t.Errorf("the caller's own goroutine is listed:\n%s", strings.Join(got, "\n\n"))
	}
}
