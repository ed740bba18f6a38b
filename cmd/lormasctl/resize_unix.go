//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyResize calls resize on every window-size change (SIGWINCH) until
// the returned stop is called.
func notifyResize(resize func()) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				resize()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
