package agent

import (
	"time"

	"github.com/lormas/lormas-agent/internal/logging"
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

// every is logging.Limiter under the names the container events loop
// (events.go) calls it by; the rest of the package uses logging.Limiter.
type every struct{ *logging.Limiter }

func newEvery(period time.Duration) *every { return &every{logging.Every(period)} }

func (e *every) allow() (bool, int) { return e.Allow() }
