package server

import "testing"

// TestOnOwnStackRaisesPanicsInTheCaller: gws recovers a panic of a frame's
// handling on the read loop; one on the helper goroutine must reach it.
func TestOnOwnStackRaisesPanicsInTheCaller(t *testing.T) {
	ran := false
	onOwnStack(func() { ran = true })
	if !ran {
		t.Fatal("onOwnStack returned before running f")
	}
	defer func() {
		if p := recover(); p != "frame" {
			t.Fatalf("recovered %v, want the panic of f", p)
		}
	}()
	onOwnStack(func() { panic("frame") })
	t.Fatal("onOwnStack returned after a panic")
}
