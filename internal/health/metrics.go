package health

import (
	"bufio"
	"net/http"
	"runtime"
	"time"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// namespace prefixes every agent metric.
const namespace = "lormas_agent"

// Metrics holds the agent's metrics (no global state) and implements the
// agent's Observer interface; /metrics serves them with the Go runtime's
// and the process's in the Prometheus text format. Its methods never
// block.
type Metrics struct {
	families []*family // in exposition order

	connected       *series
	reconnects      *series
	commands        *family // action, status
	commandDuration *family // action
	outboxDepth     *series
	logLines        *series
	runtimeErrors   *family // action
	refused         *family // reason
}

var _ agent.RefusalObserver = (*Metrics)(nil)

// refusalReasons are the label values of commands_refused_total.
var refusalReasons = []string{
	agent.RefusedNodeBytes, agent.RefusedNodeCommands,
	agent.RefusedContainerBytes, agent.RefusedContainerCommands, agent.RefusedTooLarge,
}

// commandBuckets are the upper bounds (seconds) of command_duration_seconds.
var commandBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// NewMetrics creates the agent's metrics and build information.
func NewMetrics(version, commit string) *Metrics {
	connected := newFamily("gauge", namespace+"_connected",
		"1 while the agent is connected to the server and identified, else 0.")
	reconnects := newFamily("counter", namespace+"_reconnects_total", "Connection attempts after the first (redials).")
	commands := newFamily("counter", namespace+"_commands_total", "Commands finished, by action and result status.",
		"action", "status")
	duration := newFamily("histogram", namespace+"_command_duration_seconds",
		"Time from receiving a command to its result, by action.", "action")
	duration.buckets = commandBuckets
	outbox := newFamily("gauge", namespace+"_outbox_depth", "Command results queued while disconnected, waiting to be sent.")
	logLines := newFamily("counter", namespace+"_log_lines_streamed_total", "Container log lines sent to the server by follow streams.")
	runtimeErrors := newFamily("counter", namespace+"_runtime_errors_total",
		"Docker Engine errors (unavailable, timeout, internal) by action.", "action")
	refused := newFamily("counter", namespace+"_commands_refused_total",
		"Commands answered at once with unavailable (or invalid, too_large) because the pending commands had no room for them (MAX_PENDING_BYTES), by reason: node_bytes, node_commands, container_bytes, container_commands, too_large.",
		"reason")
	buildInfo := newFamily("gauge", namespace+"_build_info", "Build information; the value is always 1.",
		"version", "commit", "goversion")
	buildInfo.with(version, commit, runtime.Version()).set(1)

	m := &Metrics{
		families:  []*family{connected, reconnects, commands, duration, outbox, logLines, runtimeErrors, refused, buildInfo},
		connected: connected.with(), reconnects: reconnects.with(), commands: commands,
		commandDuration: duration, outboxDepth: outbox.with(), logLines: logLines.with(),
		runtimeErrors: runtimeErrors, refused: refused,
	}
	// Every known series exists from the start (at 0), so rate() and
	// absent() behave before the first command.
	for _, a := range protocol.Actions {
		for _, s := range []protocol.Status{protocol.StatusSuccess, protocol.StatusError} {
			commands.with(string(a), string(s))
		}
		duration.with(string(a))
		runtimeErrors.with(string(a))
	}
	for _, r := range refusalReasons {
		refused.with(r)
	}
	return m
}

// Connected records whether the agent is connected and identified.
func (m *Metrics) Connected(up bool) {
	if up {
		m.connected.set(1)
	} else {
		m.connected.set(0)
	}
}

// Reconnect counts a redial.
func (m *Metrics) Reconnect() { m.reconnects.add(1) }

// CommandDone counts a finished command and observes its duration.
func (m *Metrics) CommandDone(action protocol.Action, status protocol.Status, took time.Duration) {
	a := actionLabel(action)
	s := string(status)
	if status != protocol.StatusSuccess && status != protocol.StatusError {
		s = "unknown"
	}
	m.commands.with(a, s).add(1)
	m.commandDuration.observe(m.commandDuration.with(a), took.Seconds())
}

// OutboxDepth records the number of queued results.
func (m *Metrics) OutboxDepth(n int) { m.outboxDepth.set(float64(n)) }

// LogLinesStreamed counts log lines sent by follow streams.
func (m *Metrics) LogLinesStreamed(n int) {
	if n > 0 {
		m.logLines.add(float64(n))
	}
}

// RuntimeError counts a container engine error during action.
func (m *Metrics) RuntimeError(action protocol.Action) {
	m.runtimeErrors.with(actionLabel(action)).add(1)
}

// CommandRefused counts a command refused for lack of room among the
// pending commands.
func (m *Metrics) CommandRefused(reason string) {
	m.refused.with(reason).add(1)
}

// actionLabel maps an action the protocol does not know to "unknown", so
// a misbehaving server cannot create unbounded label values.
func actionLabel(a protocol.Action) string {
	if a.Known() {
		return string(a)
	}
	return "unknown"
}

// ServeHTTP writes the metrics, the Go runtime's and the process's.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriter(w)
	for _, f := range m.families {
		f.write(bw)
	}
	writeGoMetrics(bw)
	writeProcessMetrics(bw)
	_ = bw.Flush() // a failed write is the scraper's: it went away
}
