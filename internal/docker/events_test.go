package docker

import (
	"strconv"
	"testing"

	"github.com/docker/docker/api/types/events"
)

func TestRecentEvents(t *testing.T) {
	r := newRecentEvents(3)
	ev := func(i int) events.Message {
		return events.Message{Action: "start", Actor: events.Actor{ID: "c" + strconv.Itoa(i)}, TimeNano: int64(i)}
	}
	for i := range 5 {
		if !r.add(ev(i)) {
			t.Fatalf("add(event %d) = false, want true (new)", i)
		}
		if r.add(ev(i)) {
			t.Fatalf("add(event %d) again = true, want false (seen)", i)
		}
	}
	if got := len(r.seen); got != 3 {
		t.Errorf("remembers %d events, want 3 (the bound)", got)
	}
	// The oldest were forgotten first.
	for i, want := range []bool{false, false, true, true, true} {
		if _, got := r.seen[eventID{id: "c" + strconv.Itoa(i), action: "start", nano: int64(i)}]; got != want {
			t.Errorf("event %d remembered = %v, want %v", i, got, want)
		}
	}
	if r.newest != 4 {
		t.Errorf("newest = %d, want 4", r.newest)
	}
}
