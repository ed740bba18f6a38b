package agent

import (
	"time"

	"github.com/lormas/lormas-agent/internal/protocol"
)

// nopObserver is the Observer of an agent given none (Options.Observer nil),
// so callers never check for nil.
type nopObserver struct{}

func (nopObserver) Connected(bool)                                              {}
func (nopObserver) Reconnect()                                                  {}
func (nopObserver) CommandDone(protocol.Action, protocol.Status, time.Duration) {}
func (nopObserver) OutboxDepth(int)                                             {}
func (nopObserver) LogLinesStreamed(int)                                        {}
func (nopObserver) RuntimeError(protocol.Action)                                {}
