package server

import (
	"strings"
	"testing"
)

// TestOnOwnStackRaisesPanicsInTheCaller: gws recovers a panic of a frame's
// handling on the read loop; one on the helper goroutine must reach it.
func TestOnOwnStackRaisesPanicsInTheCaller(t *testing.T) {
	ran := false
	onOwnStack(func() { ran = true })
	if !ran {
		t.Fatal("onOwnStack returned before running f")
	}
	defer func() {
		p, ok := recover().(*ownStackPanic)
		if !ok || p.value != "frame" {
			t.Fatalf("recovered %v, want the panic of f", p)
		}
		// The stack where it happened, which the caller's does not show.
		if !strings.Contains(p.Error(), "panicsInTheCallerFrame") {
			t.Errorf("the panic does not carry the stack of f:\n%s", p.Error())
		}
	}()
	onOwnStack(panicsInTheCallerFrame)
	t.Fatal("onOwnStack returned after a panic")
}

func panicsInTheCallerFrame() { panic("frame") }
