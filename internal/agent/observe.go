package agent

// DeliveryObserver is implemented by an Observer that also counts what the
// agent forgets, evicts, sends again, drops and reconciles, which it would
// otherwise only log (internal/health exports them as metrics). It is
// separate from Observer so existing observers keep compiling. Methods
// must not block.
type DeliveryObserver interface {
	// CommandIDsForgotten counts command ids the repeat store forgot:
	// ForgotExpired after their hour, ForgotLimit before it (more ids
	// than it holds; a repeat of one of them would run again).
	CommandIDsForgotten(reason string, n int)
	// ResultsEvicted counts stored results evicted before their hour to
	// stay within RESULT_STORE_BYTES (their ids stay known).
	ResultsEvicted(n int)
	// RepeatedCommand counts a command whose id was seen before, by how
	// it was answered (Repeat* constants).
	RepeatedCommand(answer string)
	// ResultsResent counts results written again on a new connection
	// because the previous one ended before the server confirmed them.
	ResultsResent(n int)
	// ResultsDropped counts results dropped undelivered from a full
	// outbox (OUTBOX_LIMIT).
	ResultsDropped(n int)
	// ContainerEventsRelayed counts container events sent to the server.
	ContainerEventsRelayed(n int)
	// ContainerEventsDropped counts container events not sent, by reason
	// (EventsDropped* constants); an inventory covers them.
	ContainerEventsDropped(reason string, n int)
	// InventorySent counts an inventory sent, by why (Inventory*
	// constants).
	InventorySent(reason string)
}

// Label values of DeliveryObserver.
const (
	ForgotExpired = "expired" // an hour after the id was seen
	ForgotLimit   = "limit"   // before the hour: more ids than maxCommandIDs

	RepeatStored   = "stored"    // answered with the stored result
	RepeatInFlight = "in_flight" // its result is on its way (queued, or written and not confirmed)
	RepeatRunning  = "running"   // still running: its result follows
	RepeatConflict = "conflict"  // its result was evicted: answered conflict, not run again

	EventsDroppedDisconnected = "disconnected" // no connection, or it ended (or its write failed) before the event went out
	EventsDroppedQueueFull    = "queue_full"   // the server read slower than events happened

	InventoryIdentify      = "identify"       // after every agent_identify
	InventoryEventsMissed  = "events_missed"  // the engine's event stream had a gap it could not replay
	InventoryEventsDropped = "events_dropped" // events were dropped for a slow server
)

// observer calls the optional methods of an Observer (DeliveryObserver,
// RefusalObserver): nothing unless it implements them.
type observer struct{ Observer }

func (o observer) CommandRefused(reason string) {
	if r, ok := o.Observer.(RefusalObserver); ok {
		r.CommandRefused(reason)
	}
}

func (o observer) delivery() DeliveryObserver {
	d, _ := o.Observer.(DeliveryObserver)
	return d
}

func (o observer) CommandIDsForgotten(reason string, n int) {
	if d := o.delivery(); d != nil && n > 0 {
		d.CommandIDsForgotten(reason, n)
	}
}

func (o observer) ResultsEvicted(n int) {
	if d := o.delivery(); d != nil && n > 0 {
		d.ResultsEvicted(n)
	}
}

func (o observer) RepeatedCommand(answer string) {
	if d := o.delivery(); d != nil {
		d.RepeatedCommand(answer)
	}
}

func (o observer) ResultsResent(n int) {
	if d := o.delivery(); d != nil && n > 0 {
		d.ResultsResent(n)
	}
}

func (o observer) ResultsDropped(n int) {
	if d := o.delivery(); d != nil && n > 0 {
		d.ResultsDropped(n)
	}
}

func (o observer) ContainerEventsRelayed(n int) {
	if d := o.delivery(); d != nil && n > 0 {
		d.ContainerEventsRelayed(n)
	}
}

func (o observer) ContainerEventsDropped(reason string, n int) {
	if d := o.delivery(); d != nil && n > 0 {
		d.ContainerEventsDropped(reason, n)
	}
}

func (o observer) InventorySent(reason string) {
	if d := o.delivery(); d != nil {
		d.InventorySent(reason)
	}
}
