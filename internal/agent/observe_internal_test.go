package agent

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// counts is an Observer and DeliveryObserver that adds up what it is told.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) add(k string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k] += n
}

func (c *counts) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func (c *counts) Connected(bool)                                              {}
func (c *counts) Reconnect()                                                  {}
func (c *counts) CommandDone(protocol.Action, protocol.Status, time.Duration) {}
func (c *counts) OutboxDepth(int)                                             {}
func (c *counts) LogLinesStreamed(int)                                        {}
func (c *counts) RuntimeError(protocol.Action)                                {}
func (c *counts) CommandIDsForgotten(reason string, n int)                    { c.add("forgotten "+reason, n) }
func (c *counts) ResultsEvicted(n int)                                        { c.add("evicted", n) }
func (c *counts) RepeatedCommand(answer string)                               { c.add("repeat "+answer, 1) }
func (c *counts) ResultsResent(n int)                                         { c.add("resent", n) }
func (c *counts) ResultsDropped(n int)                                        { c.add("dropped", n) }
func (c *counts) ContainerEventsRelayed(n int)                                { c.add("relayed", n) }
func (c *counts) ContainerEventsDropped(reason string, n int)                 { c.add("events dropped "+reason, n) }
func (c *counts) InventorySent(reason string)                                 { c.add("inventory "+reason, 1) }

// TestDedupCountsWhatItForgets: results evicted for the byte budget, ids
// forgotten before the hour for the id bound and ids expired after it
// are each counted for the metrics, as many as the table dropped.
func TestDedupCountsWhatItForgets(t *testing.T) {
	obs := &counts{}
	d, clock := newTestDedup(160, 10<<10, nil)
	d.obs = observer{obs}
	result := bytes.Repeat([]byte("x"), 1000)
	for i := range 1000 {
		id := fmt.Sprint("c", i)
		d.begin(id)
		d.complete(id, result)
		clock.advance(time.Millisecond)
	}
	s := d.stats()
	if s.evicted == 0 || obs.get("evicted") != int(s.evicted) {
		t.Errorf("evicted %d results, counted %d", s.evicted, obs.get("evicted"))
	}
	if s.forgotten == 0 || obs.get("forgotten "+ForgotLimit) != int(s.forgotten) {
		t.Errorf("forgot %d ids before the hour, counted %d", s.forgotten, obs.get("forgotten "+ForgotLimit))
	}
	kept := s.ids
	clock.advance(2 * time.Hour)
	d.stats() // prunes
	if got := obs.get("forgotten " + ForgotExpired); got != kept {
		t.Errorf("%d ids expired after the hour, counted %d", kept, got)
	}
}
