package health

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lormas/lormas-agent/internal/agent"
	"github.com/lormas/lormas-agent/internal/protocol"
)

// namespace prefixes every agent metric.
const namespace = "lormas_agent"

// Metrics holds the agent's Prometheus metrics in a registry of its own
// (no global state) and implements the agent's Observer interface. Its
// methods never block.
type Metrics struct {
	reg *prometheus.Registry

	connected       prometheus.Gauge
	reconnects      prometheus.Counter
	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	outboxDepth     prometheus.Gauge
	logLines        prometheus.Counter
	runtimeErrors   *prometheus.CounterVec
	refused         *prometheus.CounterVec
}

var _ agent.RefusalObserver = (*Metrics)(nil)

// refusalReasons are the label values of commands_refused_total.
var refusalReasons = []string{
	agent.RefusedNodeBytes, agent.RefusedNodeCommands,
	agent.RefusedContainerBytes, agent.RefusedContainerCommands, agent.RefusedTooLarge,
}

// NewMetrics registers the agent's metrics, build information and the Go
// and process collectors in a new registry.
func NewMetrics(version, commit string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "connected",
			Help: "1 while the agent is connected to the server and identified, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "reconnects_total",
			Help: "Connection attempts after the first (redials).",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_total",
			Help: "Commands finished, by action and result status.",
		}, []string{"action", "status"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "command_duration_seconds",
			Help:    "Time from receiving a command to its result, by action.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"action"}),
		outboxDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "outbox_depth",
			Help: "Command results queued while disconnected, waiting to be sent.",
		}),
		logLines: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "log_lines_streamed_total",
			Help: "Container log lines sent to the server by follow streams.",
		}),
		runtimeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "runtime_errors_total",
			Help: "Docker Engine errors (unavailable, timeout, internal) by action.",
		}, []string{"action"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_refused_total",
			Help: "Commands answered at once with unavailable (or invalid, too_large) because the pending commands had no room for them (MAX_PENDING_BYTES), by reason: node_bytes, node_commands, container_bytes, container_commands, too_large.",
		}, []string{"reason"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		m.connected, m.reconnects, m.commands, m.commandDuration, m.outboxDepth,
		m.logLines, m.runtimeErrors, m.refused, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every known series exists from the start (at 0), so rate() and
	// absent() behave before the first command.
	for _, a := range protocol.Actions {
		for _, s := range []protocol.Status{protocol.StatusSuccess, protocol.StatusError} {
			m.commands.WithLabelValues(string(a), string(s))
		}
		m.commandDuration.WithLabelValues(string(a))
		m.runtimeErrors.WithLabelValues(string(a))
	}
	for _, r := range refusalReasons {
		m.refused.WithLabelValues(r)
	}
	return m
}

// Registry is the registry holding the metrics (served by /metrics).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Connected records whether the agent is connected and identified.
func (m *Metrics) Connected(up bool) {
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

// Reconnect counts a redial.
func (m *Metrics) Reconnect() { m.reconnects.Inc() }

// CommandDone counts a finished command and observes its duration.
func (m *Metrics) CommandDone(action protocol.Action, status protocol.Status, took time.Duration) {
	a := actionLabel(action)
	s := string(status)
	if status != protocol.StatusSuccess && status != protocol.StatusError {
		s = "unknown"
	}
	m.commands.WithLabelValues(a, s).Inc()
	m.commandDuration.WithLabelValues(a).Observe(took.Seconds())
}

// OutboxDepth records the number of queued results.
func (m *Metrics) OutboxDepth(n int) { m.outboxDepth.Set(float64(n)) }

// LogLinesStreamed counts log lines sent by follow streams.
func (m *Metrics) LogLinesStreamed(n int) {
	if n > 0 {
		m.logLines.Add(float64(n))
	}
}

// RuntimeError counts a container engine error during action.
func (m *Metrics) RuntimeError(action protocol.Action) {
	m.runtimeErrors.WithLabelValues(actionLabel(action)).Inc()
}

// CommandRefused counts a command refused for lack of room among the
// pending commands.
func (m *Metrics) CommandRefused(reason string) {
	m.refused.WithLabelValues(reason).Inc()
}

// actionLabel maps an action the protocol does not know to "unknown", so
// a misbehaving server cannot create unbounded label values.
func actionLabel(a protocol.Action) string {
	if a.Known() {
		return string(a)
	}
	return "unknown"
}
