package health

import (
	"regexp"
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

	idsForgotten   *prometheus.CounterVec
	resultsEvicted prometheus.Counter
	repeated       *prometheus.CounterVec
	resultsResent  prometheus.Counter
	resultsDropped prometheus.Counter
	eventsRelayed  prometheus.Counter
	eventsDropped  *prometheus.CounterVec
	inventories    *prometheus.CounterVec
}

var (
	_ agent.RefusalObserver  = (*Metrics)(nil)
	_ agent.DeliveryObserver = (*Metrics)(nil)
)

// refusalReasons are the label values of commands_refused_total.
var refusalReasons = []string{
	agent.RefusedNodeBytes, agent.RefusedNodeCommands,
	agent.RefusedContainerBytes, agent.RefusedContainerCommands, agent.RefusedTooLarge,
}

// The label values of the delivery metrics, each series created at 0.
var (
	forgetReasons    = []string{agent.ForgotExpired, agent.ForgotLimit}
	repeatAnswers    = []string{agent.RepeatStored, agent.RepeatInFlight, agent.RepeatRunning, agent.RepeatConflict}
	eventDropReasons = []string{agent.EventsDroppedDisconnected, agent.EventsDroppedQueueFull}
	inventoryReasons = []string{agent.InventoryIdentify, agent.InventoryEventsMissed, agent.InventoryEventsDropped}
)

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
		idsForgotten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "command_ids_forgotten_total",
			Help: "Command ids the agent no longer remembers, by reason: expired (an hour after they were seen), limit (before the hour, because more ids arrived than it holds: a repeat of one would run again).",
		}, []string{"reason"}),
		resultsEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_evicted_total",
			Help: "Stored command results evicted before their hour to stay within RESULT_STORE_BYTES; their ids stay known, and a repeat is answered conflict.",
		}),
		repeated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "repeated_commands_total",
			Help: "Commands whose id the agent had seen within the hour, never run again, by answer: stored (the stored result), in_flight (its result was on its way, not confirmed yet), running (its result follows), conflict (its result was evicted).",
		}, []string{"answer"}),
		resultsResent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_resent_total",
			Help: "Command results sent again on a new connection because the previous one ended before the server confirmed reading them.",
		}),
		resultsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_dropped_total",
			Help: "Command results dropped undelivered because the outbox was full (OUTBOX_LIMIT).",
		}),
		eventsRelayed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "container_events_relayed_total",
			Help: "Container events sent to the server.",
		}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "container_events_dropped_total",
			Help: "Container events not sent, by reason: disconnected (no connection, or it ended first), queue_full (the server read slower than they happened). An inventory covers them.",
		}, []string{"reason"}),
		inventories: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "inventories_sent_total",
			Help: "Inventories sent for the server to reconcile, by reason: identify (after every agent_identify), events_missed (the Docker events stream had a gap the daemon could not replay), events_dropped (events were dropped for a slow server).",
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
		m.idsForgotten, m.resultsEvicted, m.repeated, m.resultsResent, m.resultsDropped,
		m.eventsRelayed, m.eventsDropped, m.inventories,
		// With the Go heap live after the last collection
		// (go_gc_heap_live_bytes): what the agent holds, without the
		// garbage that heap and RSS figures swing with.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
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
	for _, r := range forgetReasons {
		m.idsForgotten.WithLabelValues(r)
	}
	for _, a := range repeatAnswers {
		m.repeated.WithLabelValues(a)
	}
	for _, r := range eventDropReasons {
		m.eventsDropped.WithLabelValues(r)
	}
	for _, r := range inventoryReasons {
		m.inventories.WithLabelValues(r)
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

// CommandIDsForgotten counts command ids the agent forgot, by reason.
func (m *Metrics) CommandIDsForgotten(reason string, n int) {
	m.idsForgotten.WithLabelValues(reason).Add(float64(n))
}

// ResultsEvicted counts stored results evicted for RESULT_STORE_BYTES.
func (m *Metrics) ResultsEvicted(n int) { m.resultsEvicted.Add(float64(n)) }

// RepeatedCommand counts a command whose id was seen before, by answer.
func (m *Metrics) RepeatedCommand(answer string) { m.repeated.WithLabelValues(answer).Inc() }

// ResultsResent counts results sent again after a connection ended.
func (m *Metrics) ResultsResent(n int) { m.resultsResent.Add(float64(n)) }

// ResultsDropped counts results dropped from a full outbox.
func (m *Metrics) ResultsDropped(n int) { m.resultsDropped.Add(float64(n)) }

// ContainerEventsRelayed counts container events sent.
func (m *Metrics) ContainerEventsRelayed(n int) { m.eventsRelayed.Add(float64(n)) }

// ContainerEventsDropped counts container events not sent, by reason.
func (m *Metrics) ContainerEventsDropped(reason string, n int) {
	m.eventsDropped.WithLabelValues(reason).Add(float64(n))
}

// InventorySent counts an inventory sent, by reason.
func (m *Metrics) InventorySent(reason string) { m.inventories.WithLabelValues(reason).Inc() }

// actionLabel maps an action the protocol does not know to "unknown", so
// a misbehaving server cannot create unbounded label values.
func actionLabel(a protocol.Action) string {
	if a.Known() {
		return string(a)
	}
	return "unknown"
}
