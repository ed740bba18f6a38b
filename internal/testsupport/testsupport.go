// Package testsupport holds small helpers that tests across the project
// share, so they are not written again in each package's tests: a
// goroutine-safe Buffer, WaitFor and Eventually for conditions no channel
// announces, FreeAddr and FreePort for programs under test to listen on
// (never a fixed host port), and CheckLeaks and Goroutines for goroutine
// leak checks.
package testsupport

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a process's or a logger's writer and a
// test's readers may use at the same time.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
